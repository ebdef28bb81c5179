"""``make bench``: the micro benchmarks, then the cluster benchmarks; tables on stdout, JSON on disk.

Usage: ``.venv/bin/python benchmarks/run.py [--only micro|cluster] [--sizes 100,1000,10000] ...``
(``--help`` lists every knob). Results go to ``benchmarks/results/<UTC time>/`` (``results.json``,
``tables.md``, the operator's logs) and ``benchmarks/results/latest.json``. Nothing here asserts on
timings: the figures are reported, compared with their baselines and with the goals, and that is all.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "operator"))

import cluster  # noqa: E402
import common  # noqa: E402
import micro  # noqa: E402
import report  # noqa: E402


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(sorted(int(s) for s in text.split(",") if s.strip()))


def parse(argv: list[str]) -> argparse.Namespace:
    defaults = cluster.Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--only", choices=("micro", "cluster"), help="run only one part")
    p.add_argument("--sizes", type=_sizes, default=defaults.sizes, help="CTJ counts, comma-separated")
    p.add_argument("--samples", type=int, default=defaults.samples, help="latency samples per size and side")
    p.add_argument("--spacing", type=float, default=defaults.spacing, help="seconds between latency samples")
    p.add_argument(
        "--idle-small", type=float, default=defaults.idle_small, help="idle window (s) below --large-from CTJs"
    )
    p.add_argument("--idle-large", type=float, default=defaults.idle_large, help="idle window (s) from --large-from")
    p.add_argument("--large-from", type=int, default=defaults.large_from)
    p.add_argument(
        "--background",
        type=float,
        default=defaults.background,
        help="window (s) with the operator stopped, for the control plane's own traffic",
    )
    p.add_argument("--burst", type=int, default=defaults.burst, help="changes in the burst")
    p.add_argument("--burst-at", type=int, default=defaults.burst_at, help="CTJ count at which to burst")
    p.add_argument("--no-ha", action="store_true", help="skip the leader-election runs")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="per size only populate, idle, background and restart (memory, idle and restart figures); "
        "no latency, burst or HA",
    )
    p.add_argument("--ha-idle", type=float, default=defaults.ha_idle)
    p.add_argument("--cluster", default=defaults.cluster, help="name of the dedicated cluster")
    p.add_argument("--keep-cluster", action="store_true", help="do not delete the cluster at the end")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = common.RESULTS / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {"machine": common.machine()}
    common.emit(common.machine_line(results["machine"]))
    if args.only in (None, "micro"):
        common.log("micro benchmarks")
        results["micro"] = micro.run()
        for text in micro.tables(results["micro"]):
            common.emit(text)
    if args.only in (None, "cluster"):
        cfg = cluster.Config(
            sizes=args.sizes,
            samples=args.samples,
            spacing=args.spacing,
            idle_small=args.idle_small,
            idle_large=args.idle_large,
            large_from=args.large_from,
            background=args.background,
            burst=args.burst,
            burst_at=args.burst_at,
            ha=not args.no_ha,
            memory_only=args.memory_only,
            ha_idle=args.ha_idle,
            cluster=args.cluster,
            keep_cluster=args.keep_cluster,
        )
        results["cluster"] = cluster.run(cfg, workdir)
        for text in report.cluster_tables(results["cluster"], results["machine"]):
            common.emit(text)
    results["total_seconds"] = time.monotonic() - started
    path = common.write_results(f"{stamp}/results", results)
    shutil.copyfile(path, common.RESULTS / "latest.json")
    (workdir / "tables.md").write_text(report.markdown(results))
    common.emit(f"\ntotal {results['total_seconds'] / 60:.1f} min; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
