"""3 replicas, 200 CTJs: every CTJ is handled by exactly one replica, shards balanced within ±1."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ctj_helpers import Kube, configmaps_with_ctjs, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ELECTION = (
    "--leader-elect=true",
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=0.5s",
    "--shards=16",
)


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_three_replicas_share_200_ctjs(kube: Kube, operator_factory: Any) -> None:
    count = 200
    manifest = configmaps_with_ctjs(
        kube.ns, count, config=lambda i: f"cm-{i}", ctjs=lambda i: [f"ctj-{i:03d}"], cooldown="0s"
    )
    kube.run("apply", "-n", kube.ns, "-f", "-", input_=manifest)
    replicas = [operator_factory(extra=ELECTION, name=f"r{i}", wait_ready=False) for i in range(3)]
    for proc in replicas:
        proc.wait_ready(timeout=60)

    seen: list[Any] = []

    def settled() -> tuple[list[float], list[float]] | None:
        texts = [p.metrics() for p in replicas]
        shards = [_gauge(t, "changejob_owned_shards") for t in texts]
        ctjs = [_gauge(t, "changejob_ctjs") for t in texts]
        seen[:] = [shards, ctjs]
        # Replicas start one after another: the first owns everything until the others join.
        balanced = max(shards) - min(shards) <= 1
        return (shards, ctjs) if balanced and sum(shards) == 16 and sum(ctjs) == count else None

    try:
        shards, ctjs = wait_until(settled, timeout=90, what="shards (±1) and all CTJs spread")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last shards and CTJs per replica: {seen}") from None
    assert sorted(shards) == [5.0, 5.0, 6.0], shards
    assert min(ctjs) > 0, ctjs

    def all_baselined() -> bool:
        items = kube.ctjs()
        return len(items) == count and all(
            ((c.get("status") or {}).get("resourceHashes") or [{}])[0].get("state") == "Present" for c in items.values()
        )

    wait_until(all_baselined, timeout=60, what="every CTJ handled")
    leases = kube.run("get", "leases", "-n", kube.ns, "-l", "changejob.dev/role=shard", "-o", "json").stdout
    holders = [item["spec"].get("holderIdentity") for item in yaml.safe_load(leases)["items"]]
    assert len(holders) == 16
    assert set(holders) <= {"r0", "r1", "r2"}, holders
    # A change on a CTJ of each replica triggers exactly once.
    for i in (0, 77, 199):
        kube.patch("configmap", f"cm-{i}", {"data": {"k": "1"}})
    for i in (0, 77, 199):
        wait_until(lambda i=i: kube.jobs(f"ctj-{i:03d}"), what=f"job of ctj-{i:03d}")  # type: ignore[misc]
        assert len(kube.jobs(f"ctj-{i:03d}")) == 1


def test_ctjs_listed_before_the_shards_are_won_are_not_lost(kube: Kube, operator_factory: Any) -> None:
    """With election on, a replica wins its shards while the first CTJ list (pages of 500) is running:
    CTJs of pages read before the win must be read again, not dropped."""
    count = 1200
    manifest = configmaps_with_ctjs(kube.ns, count, config=lambda i: f"cm-{i}", ctjs=lambda i: [f"ctj-{i:04d}"])
    kube.run("apply", "--server-side", "-n", kube.ns, "-f", "-", input_=manifest)
    proc = operator_factory(extra=("--leader-elect=true",), name="solo")

    def handled() -> tuple[float, float] | None:
        # Held in the store, then subscribed to their objects by a reconcile each.
        text = proc.metrics()
        held, watched = _gauge(text, "changejob_ctjs"), _gauge(text, "changejob_watched_objects")
        return (held, watched) if held == count and watched == count else None

    wait_until(handled, timeout=90, interval=1.0, what=f"all {count} CTJs handled by the one replica")
