"""Tables of the cluster results, with the goals next to the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import micro
from common import fmt, machine_line, table

GOALS = {
    "p99_1000": 0.250,
    "p99_10000": 1.0,
    "p50_ratio": 2.0,
    "api_per_min": 30.0,
    "api_flat": 0.10,
    "rss_10000": 150.0,
    "restart_10000": 10.0,
}


def ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.0f}"


def x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def _top(counts: Mapping[str, float], n: int = 4) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.1f}" for k, v in items) or "none"


def cluster_tables(res: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    sizes = res.get("sizes") or {}
    out = [f"\n{machine_line(machine)}; Kubernetes {res.get('kubernetes')} (kwok, binary runtime)"]
    empty = res.get("empty") or {}
    if empty:
        out.append(
            f"operator with no CTJs: ready in {empty['ready_seconds']:.2f}s, RSS {empty['rss_mib']:.0f} MiB; "
            f"baseline client RSS {empty['limit_client_rss_mib']:.0f} MiB"
        )

    rows = []
    for size, r in sizes.items():
        p = r["populate"]
        new = p["ctjs_created"]
        rows.append(
            [
                size,
                p["objects_created"],
                new,
                f"{p['objects_seconds']:.1f}",
                f"{p['ctjs_seconds']:.1f}",
                f"{p['all_baselined_after_first_ctj_seconds']:.1f}",
                f"{new / p['all_baselined_after_first_ctj_seconds']:.0f}"
                if p["all_baselined_after_first_ctj_seconds"] > 0
                else "-",
            ]
        )
    out.append(
        table(
            "Populate (objects and CTJs added at each size, operator running)",
            ["CTJs", "objects added", "CTJs added", "objects s", "CTJs s", "all baselined s", "baselines/s"],
            rows,
        )
    )

    rows = []
    for size, r in sizes.items():
        if "latency" not in r:  # a --memory-only run
            continue
        lat = r["latency"]
        o, lim = lat["operator"], lat["limit"]
        goal_p99 = GOALS["p99_1000"] if int(size) <= 1000 else GOALS["p99_10000"]
        ok = None
        if int(size) in (1000, 10000):
            ok = o["p99"] <= goal_p99 and (lat["p50_ratio"] or math.inf) <= GOALS["p50_ratio"]
        rows.append(
            [
                size,
                o["n"],
                ms(o["p50"]),
                ms(o["p95"]),
                ms(o["p99"]),
                ms(o["max"]),
                ms(lim["p50"]),
                ms(lim["p95"]),
                ms(lim["p99"]),
                x(lat["p50_ratio"]),
                x(lat["p99_ratio"]),
                f"{lat['lost']['operator']}/{lat['lost']['limit']}",
                verdict(ok),
            ]
        )
    if rows:
        out.append(
            table(
                "Change→Job latency, ms (PATCH response → Job seen by a watch; baseline: watch-and-create "
                "client; goal p99 ≤ 250 ms at 1 000, ≤ 1 s at 10 000, p50 ≤ 2x baseline)",
                [
                    "CTJs",
                    "n",
                    "p50",
                    "p95",
                    "p99",
                    "max",
                    "base p50",
                    "base p95",
                    "base p99",
                    "p50 ratio",
                    "p99 ratio",
                    "lost",
                    "goal",
                ],
                rows,
            )
        )

    rows = []
    for size, r in sizes.items():
        idle = r["idle"]
        bg = r["background"]["all_per_minute"]
        bg_total = sum(bg.values())
        all_total = sum(idle["all_per_minute"].values())
        non_lease = idle["operator_non_lease_per_minute"]
        rows.append(
            [
                size,
                f"{idle['seconds']:.0f}",
                f"{non_lease:.1f}",
                f"{idle['operator_lease_per_minute']:.1f}",
                f"{sum(v for k, v in idle['operator_per_minute'].items() if k.endswith('-events')):.1f}",
                _top(idle["operator_per_minute"]),
                f"{all_total:.0f}",
                f"{bg_total:.0f}",
                f"{all_total - bg_total:.0f}",
                verdict(non_lease < GOALS["api_per_min"]),
            ]
        )
    out.append(
        table(
            "API economy with no changes, requests/min. Operator: exact, its ServiceAccount's requests by "
            "FlowSchema. Check: all API requests in the window, and in a window with the operator stopped "
            "(goal: operator < 30/min besides Leases, flat from 100 to 10 000)",
            [
                "CTJs",
                "window s",
                "operator",
                "Leases",
                "of which Events",
                "operator by verb-resource",
                "all",
                "all, operator stopped",
                "difference",
                "goal",
            ],
            rows,
        )
    )

    rows = []
    for size, r in sizes.items():
        idle = r["idle"]
        rss_long = idle["rss_mib"][0]
        rss_fresh = r["restart"]["rss_mib"]
        per = (rss_fresh - empty.get("rss_mib", 0.0)) * 1024 / int(size) if empty else None
        ok = max(rss_long, rss_fresh) <= GOALS["rss_10000"] if int(size) == 10000 else None
        rows.append(
            [
                size,
                f"{2 * int(size)} ({r['watched_objects']:.0f})",
                f"{r['watch_streams']:.0f}",
                f"{rss_long:.0f}",
                f"{idle['peak_rss_mib'][0]:.0f}",
                f"{rss_fresh:.0f}",
                f"{r['restart']['peak_rss_mib']:.0f}",
                f"{empty.get('rss_mib', math.nan):.0f}",
                "-" if per is None else f"{per:.1f}",
                f"{idle['cpu_percent'][0]:.2f}",
                verdict(ok),
            ]
        )
    out.append(
        table(
            "Memory (VmRSS, MiB) and idle CPU. Long-running: the process that created every baseline so far, "
            "after the idle window; restarted: a fresh process once quiet. Baseline: the same process with "
            "no CTJs. Goal ≤ 150 MB at 10 000",
            [
                "CTJs",
                "watched objects (metric)",
                "streams",
                "long-running",
                "its peak",
                "restarted",
                "its peak",
                "empty",
                "KiB/CTJ (restarted - empty)",
                "idle CPU %",
                "goal",
            ],
            rows,
        )
    )

    rows = []
    for size, r in sizes.items():
        rs = r["restart"]
        ok = (
            (rs["ready_seconds"] <= GOALS["restart_10000"] and rs["jobs_created_by_restart"] == 0)
            if int(size) == 10000
            else None
        )
        rows.append(
            [
                size,
                f"{r['background']['shutdown_seconds']:.1f}",
                f"{rs['ready_seconds']:.2f}",
                f"{rs['settled_seconds']:.1f}",
                f"{rs['relist_floor_seconds']:.2f}",
                x(rs["ready_vs_floor"]),
                rs["jobs_created_by_restart"],
                rs.get("resources_not_present", "-"),
                f"{rs['status_writes']:.0f}",
                f"{rs['requests_total']:.0f}",
                _top(rs["requests"], 3),
                verdict(ok),
            ]
        )
    out.append(
        table(
            "Restart (SIGTERM, then start; baseline: one client listing every CTJ and watched object; "
            "goal at 10 000: ready ≤ 10 s and 0 Jobs; every watched object exists, so every resource "
            "should be Present)",
            [
                "CTJs",
                "stop s",
                "ready s",
                "quiet s",
                "list-all s",
                "ready/list",
                "new Jobs",
                "resources not Present",
                "status writes",
                "requests",
                "top requests",
                "goal",
            ],
            rows,
        )
    )

    for size, r in sizes.items():
        b = r.get("burst")
        if not b:
            continue
        rows = []
        for side in ("operator", "limit"):
            s = b[side]
            rows.append(
                [
                    side if side == "operator" else "baseline client",
                    s["changes"],
                    f"{s['patch_seconds']:.1f}",
                    "-" if s["all_jobs_seconds"] is None else f"{s['all_jobs_seconds']:.1f}",
                    "-" if s["after_last_patch_seconds"] is None else f"{s['after_last_patch_seconds']:.1f}",
                    s["jobs_created"],
                    s["owners_without_job"],
                    s["duplicates"],
                ]
            )
        running = b.get("jobs_still_running")
        out.append(
            table(
                f"Burst at {size} CTJs ({b['operator']['changes']} changes at once, 8 threads; "
                f"ratio operator/baseline {x(b['ratio'])}; Jobs the Job controller had yet to finish "
                f"afterwards: {fmt(running)}; goal: 0 duplicates)",
                ["who", "changes", "patching s", "all Jobs s", "after last patch s", "Jobs", "missing", "duplicates"],
                rows,
            )
        )

    ha = res.get("ha") or {}
    if ha.get("error"):
        out.append(f"\nHA at {ha['size']}: not measured ({ha['error']})")
    elif ha:
        rows = []
        for replicas in ("1", "3"):
            h = ha.get(replicas)
            if not h:
                continue
            if "replicas" not in h:  # a replica exited or never became ready
                problem = h.get("error") or f"exited: {h.get('exited')}"
                rows.append([replicas, problem, *["-"] * 10])
                continue
            for p in h["replicas"]:
                rows.append(
                    [
                        replicas,
                        p["identity"],
                        f"{p['ctjs']:.0f}",
                        f"{p['shards']:.0f}",
                        f"{p['rss_mib']:.0f}",
                        f"{p['cpu_percent']:.1f}",
                        f"{h['converged_seconds']:.1f}",
                        f"{h['idle']['operator_lease_per_minute']:.1f}",
                        f"{h['idle']['operator_non_lease_per_minute']:.1f}",
                        h["jobs_created"],
                        f"{h.get('owned_total', 0):.0f}",
                        h.get("resources_not_present", "-"),
                    ]
                )
        out.append(
            table(
                f"HA at {ha['size']} CTJs (--leader-elect=true; Lease and other requests/min are for all "
                "replicas together)",
                [
                    "replicas",
                    "identity",
                    "CTJs owned",
                    "shards",
                    "RSS MiB",
                    "idle CPU %",
                    "converged s",
                    "Leases/min",
                    "other/min",
                    "new Jobs",
                    "owned, all replicas",
                    "resources not Present",
                ],
                rows,
            )
        )

    growth = res.get("growth") or {}
    if growth:
        rows = [[k, fmt(v["at_1000"], 3), fmt(v["at_10000"], 3), fmt(v["exponent"], 2)] for k, v in growth.items()]
        out.append(
            table(
                "Growth from 1 000 to 10 000 CTJs (exponent log(c10k/c1k)/log 10: 0 flat, 1 linear)",
                ["cost", "at 1 000", "at 10 000", "exponent"],
                rows,
            )
        )
    return out


def markdown(results: Mapping[str, Any]) -> str:
    """Every table as Markdown: each title in bold on a line of its own, a blank line before its table."""
    parts = [machine_line(results["machine"])]
    if "micro" in results:
        parts.extend(micro.tables(results["micro"]))
    if "cluster" in results:
        parts.extend(cluster_tables(results["cluster"], results["machine"]))
    lines: list[str] = []
    for line in "\n".join(parts).splitlines():
        if line and not line.startswith("|"):
            lines.extend([f"**{line}**", ""])
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
