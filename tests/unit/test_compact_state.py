"""The compact forms of what the operator keeps per CTJ and per watched object.

The subscriptions and the CTJ store keep one entry per CTJ and per watched object for as long as the
process runs, so their forms are chosen for memory: packed CTJs, digests as one string per object,
subscriptions as tuples. These tests check that the compact forms say exactly what the plain ones did.
The subscriptions' side is tested in test_subscriptions.py.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import orjson
import pytest

from changejob.domain import hashing
from changejob.kube import watch
from changejob.runtime import stores

pytestmark = pytest.mark.unit

NS = "ns"


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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_buffers_are_kept_off_the_heap_with_glibc() -> None:
    assert watch.large_buffers_off_heap() is True
