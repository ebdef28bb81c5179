"""The compact forms of what the operator keeps per CTJ and per watched object.

The registry and the CTJ store keep one entry per CTJ and per watched object for as long as the
process runs, so their forms are chosen for memory: packed CTJs, digests as one string per object,
subscriptions as tuples. These tests check that the compact forms say exactly what the plain ones did.
The registry is driven through a real ``Stream`` fed by hand, as its list+watch would feed it; no
request is ever sent.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from kubernetes import client as k8s_client

from changejob.domain import api, hashing
from changejob.kube import discovery, transport, watch
from changejob.runtime import registry, stores

pytestmark = pytest.mark.unit

NS = "ns"
CONFIGMAPS = discovery.ResourceType(group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True)


def ctj_with_status(name: str) -> dict[str, Any]:
    entry = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "cfg",
        "namespace": NS,
        "fields": [{"field": "data", "hash": "a" * 32, "lastTriggeredHash": "a" * 32}],
        "hash": "b" * 32,
        "lastTriggeredHash": "b" * 32,
        "changed": False,
        "state": "Present",
    }
    condition = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "watching 2 resource(s)"}
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"namespace": NS, "name": name, "resourceVersion": "7", "uid": "u-" + name, "generation": 1},
        "spec": {"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": NS}]},
        "status": {"resourceHashes": [entry, dict(entry, name="other")], "conditions": [condition] * 4},
    }


# --- CTJ store ---------------------------------------------------------------------------------------


def test_a_packed_ctj_is_its_compact_json_in_a_buffer_of_exactly_that_size() -> None:
    obj = ctj_with_status("a")
    packed = stores.pack(obj)
    assert packed == orjson.dumps(obj)
    assert stores.unpack(packed) == obj
    # orjson's own output keeps its whole write buffer: several times the JSON of a small object.
    assert sys.getsizeof(packed) - len(packed) <= sys.getsizeof(b"")


def test_the_store_hands_out_independent_copies() -> None:
    store = stores.CtjStore(notify=lambda key: None, accept=lambda key: True)
    store.event("ADDED", ctj_with_status("a"))
    first = store.get((NS, "a"))
    assert first is not None
    first["status"]["resourceHashes"].clear()
    again = store.get((NS, "a"))
    assert again is not None and len(again["status"]["resourceHashes"]) == 2


def test_keys_share_one_namespace_string() -> None:
    parsed = [orjson.loads(b'{"metadata": {"namespace": "team-a", "name": "ctj-%d"}}' % i) for i in range(2)]
    assert parsed[0]["metadata"]["namespace"] is not parsed[1]["metadata"]["namespace"]
    first, second = (stores.CtjStore.key_of(obj) for obj in parsed)
    assert first[0] is second[0]


# --- hasher digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selected", "key"),
    [
        (("data",), None),
        (("data", "metadata.labels", "spec.missing"), None),
        (("data",), bytes(range(32))),
        (("spec.missing",), bytes(range(32))),
    ],
)
def test_packed_digests_say_what_the_pairs_say(selected: tuple[str, ...], key: bytes | None) -> None:
    hasher = hashing.ObjectHasher(fields=selected, key=key)
    obj = {"metadata": {"name": "cfg", "labels": {"a": "b"}}, "data": {"k": "v"}}
    pairs, combined = hasher.hash(obj)
    assert hashing.split_digests(hasher.digests(obj)) == (combined, [d for _, d in pairs])
    assert combined == hashing.combine([d for _, d in pairs])


# --- registry ----------------------------------------------------------------------------------------


class Harness:
    """A registry whose ConfigMap stream in ``ns`` is fed by the test instead of a list+watch."""

    def __init__(self) -> None:
        configuration = k8s_client.Configuration()
        configuration.host = "https://127.0.0.1:9"  # never contacted: the stream's thread is not started
        self.woken: list[tuple[str, str]] = []
        self.registry = registry.Registry(
            transport_=transport.Transport(k8s_client.ApiClient(configuration)),
            notify=self.woken.append,
            hash_key=None,
        )
        self.stream = registry.Stream(registry=self.registry, rtype=CONFIGMAPS, namespace=NS)
        self.registry._streams[(CONFIGMAPS, NS)] = self.stream

    def subscribe(self, ctj: str, *refs: tuple[str, tuple[str, ...]]) -> None:
        wanted = [(api.ResourceRef("v1", "ConfigMap", name, NS, fields), CONFIGMAPS) for name, fields in refs]
        self.registry.subscribe((NS, ctj), wanted)

    def observed(self, ctj: str) -> list[registry.Observed]:
        found = self.registry.observed((NS, ctj))
        assert found is not None
        return found


def configmap(name: str, data: dict[str, str], rv: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)}, "data": data}


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.registry.stop()


def test_observed_hashes_are_the_hashers_and_move_only_with_the_selected_fields(harness: Harness) -> None:
    harness.subscribe("a", ("cfg", ("data",)), ("gone", ("data",)))
    harness.subscribe("b", ("cfg", ("data",)))  # the same object through the same fields
    harness.subscribe("c", ("cfg", ("metadata.labels", "data")))
    assert harness.registry.observed((NS, "a")) is None  # not synced yet
    harness.stream.begin_sync()
    harness.stream.synced_object(configmap("cfg", {"k": "v"}))
    harness.stream.synced_object(configmap("unwatched", {"k": "v"}))
    harness.stream.end_sync()

    cfg = configmap("cfg", {"k": "v"})
    data_pairs, data_hash = hashing.ObjectHasher(fields=("data",)).hash(cfg)
    both_pairs, both_hash = hashing.ObjectHasher(fields=("metadata.labels", "data")).hash(cfg)
    present, missing = harness.observed("a")
    assert (present.state, present.hash, present.fields) == (registry.PRESENT, data_hash, data_pairs)
    assert (missing.state, missing.hash, missing.fields) == (registry.MISSING, None, ())
    assert missing.message == "ConfigMap/ns/gone not found"
    assert harness.observed("b")[0].fields == data_pairs
    assert (harness.observed("c")[0].hash, harness.observed("c")[0].fields) == (both_hash, both_pairs)

    harness.woken.clear()
    annotated = configmap("cfg", {"k": "v"}, rv=2)
    annotated["metadata"]["annotations"] = {"note": "not selected"}
    harness.stream.event("MODIFIED", annotated)
    assert harness.woken == []  # nothing selected moved
    harness.stream.event("MODIFIED", configmap("cfg", {"k": "w"}, rv=3))
    assert sorted(harness.woken) == [(NS, "a"), (NS, "b"), (NS, "c")]
    moved = harness.observed("a")[0]
    assert moved.hash != data_hash and moved.fields[0][0] == "data" and moved.changed_at > 0
    harness.registry.covered((NS, "a"), 0, moved)
    assert harness.observed("a")[0].origins == () and harness.observed("a")[0].hash == moved.hash

    harness.stream.event("DELETED", configmap("cfg", {"k": "w"}, rv=4))
    assert [o.state for o in harness.observed("b")] == [registry.MISSING]


def test_unsubscribing_leaves_the_other_subscriptions_of_an_object(harness: Harness) -> None:
    harness.subscribe("a", ("cfg", ("data",)))
    harness.subscribe("b", ("cfg", ("data",)), ("more", ("data",)))
    assert {name: len(subs) for name, subs in harness.stream.by_name.items()} == {"cfg": 2, "more": 1}
    harness.registry.unsubscribe((NS, "b"))
    assert [s.ctj for s in harness.stream.by_name["cfg"]] == [(NS, "a")]
    assert "more" not in harness.stream.by_name
    harness.registry.unsubscribe((NS, "a"))
    assert harness.stream.stop.is_set()  # nobody needs the collection any more
    assert harness.registry.synced()  # no stream left


def test_a_twin_joining_a_synced_stream_shares_what_is_observed(harness: Harness) -> None:
    harness.subscribe("a", ("cfg", ("data",)))
    harness.stream.begin_sync()
    harness.stream.synced_object(configmap("cfg", {"k": "v"}))
    harness.stream.end_sync()
    harness.subscribe("b", ("cfg", ("data",)))
    assert harness.observed("b")[0] is harness.observed("a")[0]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_buffers_are_kept_off_the_heap_with_glibc() -> None:
    assert watch.large_buffers_off_heap() is True
