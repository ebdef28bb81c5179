"""The manager's wiring against an in-memory API server: shard handover, and the resync.

The manager runs for real (its list+watch threads, workers, stores, subscriptions); the API server is
``fake_kube.FakeTransport`` and the shard ownership is changed by the test as a Lease round would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from changejob import settings as settings_mod
from changejob.domain import api
from changejob.kube import resources
from changejob.runtime import manager, ownership
from fake_kube import FakeTransport
from helpers import wait_for

pytestmark = pytest.mark.unit

NS = "team-a"
CONFIGMAPS = resources.ResourceType(group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True)


class Shards:
    """An ``ownership.Ownership`` whose owned CTJ names the test sets, telling the manager like a round."""

    shards = 2

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self._on_change: ownership.ShardsChanged = lambda gained, lost: None

    def start(self, on_change: ownership.ShardsChanged) -> None:
        self._on_change = on_change
        on_change({0}, set())

    def hand_over(self, *names: str) -> None:
        lost = self.names - set(names)
        gained = set(names) - self.names
        self.names = set(names)
        self._on_change({1} if gained else set(), {0} if lost else set())

    def owns(self, key: tuple[str, str]) -> bool:
        return key[1] in self.names

    def may_act(self, key: tuple[str, str]) -> bool:
        return self.owns(key)

    def joined(self) -> bool:
        return True

    def owned(self) -> set[int]:
        return {0}

    def stop(self) -> None:
        return None


def ctj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": NS}],
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}},
        },
    }


def settings() -> settings_mod.Settings:
    return settings_mod.Settings(
        metrics_bind_address="0",
        health_probe_bind_address="0",
        leader_election_namespace="kube-changejob-system",
        identity="unit",
        workers=2,
        poll_interval=timedelta(hours=1),
    )


@pytest.fixture
def fake() -> FakeTransport:
    api_ = FakeTransport()
    api_.serve(CONFIGMAPS)
    api_.add(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": NS}, "data": {"k": "v"}})
    for name in ("a", "b", "c"):
        api_.add(resources.CTJ, ctj(name))
    return api_


@pytest.fixture
def running(fake: FakeTransport) -> Iterator[tuple[manager.Manager, Shards]]:
    mgr = manager.Manager(settings(), transport_=fake)
    shards = Shards("a")
    mgr.ownership = shards
    mgr.start()
    yield mgr, shards
    mgr.shutdown()


def baselined(fake: FakeTransport, name: str) -> bool:
    found = fake.get(resources.CTJ, NS, name)
    return bool(found and (found.get("status") or {}).get("resourceHashes"))


def test_a_handover_moves_ctjs_in_and_out_of_the_store(
    fake: FakeTransport, running: tuple[manager.Manager, Shards]
) -> None:
    mgr, shards = running
    wait_for(lambda: baselined(fake, "a"), timeout=10, message="the owned CTJ's baseline")
    assert mgr.ctjs.all_keys() == [(NS, "a")]
    assert not baselined(fake, "b")

    shards.hand_over("a", "b")  # gained a shard: its CTJs are listed again and reconciled
    wait_for(lambda: baselined(fake, "b"), timeout=10, message="the gained CTJ's baseline")
    assert sorted(mgr.ctjs.all_keys()) == [(NS, "a"), (NS, "b")]

    shards.hand_over("b")  # lost a shard: its CTJs leave memory at once
    assert mgr.ctjs.all_keys() == [(NS, "b")]
    assert mgr.subscriptions is not None and mgr.subscriptions.observed((NS, "a")) is None
    assert not baselined(fake, "c")


def test_the_resync_queues_every_owned_ctj_once_behind_changes(fake: FakeTransport) -> None:
    mgr = manager.Manager(settings(), transport_=fake)
    mgr.ownership = Shards("a", "b", "c")
    for name in ("a", "b", "c"):
        found = fake.get(resources.CTJ, NS, name)
        assert found is not None
        mgr.ctjs.event("ADDED", found)
    drain(mgr)
    mgr.queue.add_after((NS, "a"), 3600)  # deferred by a long cooldown: re-checked anyway
    mgr.queue.add((NS, "c"))  # a change already waiting: keeps its place in front
    mgr.resync_once()
    assert drain(mgr) == [(NS, "c"), (NS, "a"), (NS, "b")]
    mgr.queue.close()


def drain(mgr: manager.Manager) -> list[tuple[str, str]]:
    out = []
    while (key := mgr.queue.get(timeout=0)) is not None:
        out.append(key)
        mgr.queue.done(key)
    return out
