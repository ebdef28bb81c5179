"""Subscriptions and streams: what CTJs observe of watched objects, with an in-memory API server.

Streams are not started (``start=False``): each test feeds a stream as its list+watch would (the
``watch.Sink`` calls) and runs the fetcher's steps itself, with an injected clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from changejob.domain import api, hashing
from changejob.domain.observed import FORBIDDEN, MISSING, PRESENT, UNKNOWN, Observed
from changejob.kube import resources, transport
from changejob.runtime import streams, subscriptions
from changejob.telemetry import metrics
from fake_kube import FakeTransport

pytestmark = pytest.mark.unit

NS = "ns"
CONFIGMAPS = resources.ResourceType(group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self) -> None:
        self.api = FakeTransport()
        self.clock = Clock()
        self.woken: list[tuple[str, str]] = []
        self.subs = subscriptions.Subscriptions(
            transport_=self.api, notify=self.woken.append, hash_key=None, clock=self.clock, start=False
        )

    def subscribe(self, ctj: str, *refs: tuple[str, tuple[str, ...]]) -> None:
        wanted = [(api.ResourceRef("v1", "ConfigMap", name, NS, fields), CONFIGMAPS) for name, fields in refs]
        self.subs.subscribe((NS, ctj), wanted)

    @property
    def stream(self) -> streams.Stream:
        found = self.subs.stream(CONFIGMAPS, NS)
        assert found is not None
        return found

    def observed(self, ctj: str) -> list[Observed]:
        found = self.subs.observed((NS, ctj))
        assert found is not None
        return found

    def list(self, *objs: dict[str, Any]) -> None:
        self.stream.begin_sync()
        for obj in objs:
            self.stream.synced_object(obj)
        self.stream.end_sync()


def configmap(name: str, data: dict[str, str], rv: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)}, "data": data}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.subs.stop()


# --- observing ---------------------------------------------------------------------------------------


def test_observed_hashes_are_the_hashers_and_move_only_with_the_selected_fields(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)), ("gone", ("data",)))
    h.subscribe("b", ("cfg", ("data",)))  # the same object through the same fields
    h.subscribe("c", ("cfg", ("metadata.labels", "data")))
    assert h.subs.observed((NS, "a")) is None  # not synced yet
    h.list(configmap("cfg", {"k": "v"}), configmap("unwatched", {"k": "v"}))

    cfg = configmap("cfg", {"k": "v"})
    data_pairs, data_hash = hashing.ObjectHasher(fields=("data",)).hash(cfg)
    both_pairs, both_hash = hashing.ObjectHasher(fields=("metadata.labels", "data")).hash(cfg)
    present, missing = h.observed("a")
    assert (present.state, present.hash, present.fields) == (PRESENT, data_hash, data_pairs)
    assert (missing.state, missing.hash, missing.fields) == (MISSING, None, ())
    assert missing.message == "ConfigMap/ns/gone not found"
    assert h.observed("b")[0].fields == data_pairs
    assert (h.observed("c")[0].hash, h.observed("c")[0].fields) == (both_hash, both_pairs)

    h.woken.clear()
    annotated = configmap("cfg", {"k": "v"}, rv=2)
    annotated["metadata"]["annotations"] = {"note": "not selected"}
    h.stream.event("MODIFIED", annotated)
    assert h.woken == []  # nothing selected moved
    h.clock.now += 5
    h.stream.event("MODIFIED", configmap("cfg", {"k": "w"}, rv=3))
    assert sorted(h.woken) == [(NS, "a"), (NS, "b"), (NS, "c")]
    moved = h.observed("a")[0]
    assert moved.hash != data_hash and moved.fields[0][0] == "data"
    assert moved.changed_at == 1000.0 and moved.origins[-1][0] == 1005.0  # the list's value was not covered yet
    h.subs.covered((NS, "a"), 0, moved)
    assert h.observed("a")[0].origins == () and h.observed("a")[0].hash == moved.hash

    h.stream.event("DELETED", configmap("cfg", {"k": "w"}, rv=4))
    assert [o.state for o in h.observed("b")] == [MISSING]


def test_a_relist_marks_what_it_no_longer_returns_missing(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)), ("other", ("data",)))
    h.list(configmap("cfg", {"k": "v"}), configmap("other", {"k": "v"}))
    h.list(configmap("other", {"k": "v"}))  # cfg was deleted while no watch ran
    assert [o.state for o in h.observed("a")] == [MISSING, PRESENT]


def test_unsubscribing_leaves_the_other_subscriptions_of_an_object(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)))
    h.subscribe("b", ("cfg", ("data",)), ("more", ("data",)))
    stream = h.stream
    h.subs.unsubscribe((NS, "b"))
    assert stream.listwatch is h.stream.listwatch and not stream.stop.is_set()
    h.list(configmap("cfg", {"k": "v"}), configmap("more", {"k": "v"}))
    assert [o.state for o in h.observed("a")] == [PRESENT]
    h.subs.unsubscribe((NS, "a"))
    assert stream.stop.is_set()  # nobody needs the collection any more
    assert h.subs.stream(CONFIGMAPS, NS) is None
    assert h.subs.synced()  # no stream left


def test_a_twin_joining_a_synced_stream_shares_what_is_observed(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)))
    h.list(configmap("cfg", {"k": "v"}))
    h.subscribe("b", ("cfg", ("data",)))
    assert h.observed("b")[0] is h.observed("a")[0]
    assert h.api.requests == []


def test_a_stream_that_cannot_be_watched_says_why(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)))
    h.stream.failed(transport.ApiError(403, "Forbidden", "no"))
    (seen,) = h.observed("a")
    assert seen.state == FORBIDDEN and "grant get, list, watch" in seen.message
    h.subscribe("b", ("cfg", ("data",)))  # a newcomer learns it at once
    assert h.observed("b")[0].state == FORBIDDEN
    h.list(configmap("cfg", {"k": "v"}))  # the stream's next list works again
    assert h.observed("a")[0].state == PRESENT and h.observed("b")[0].state == PRESENT
    h.stream.failed(transport.ApiError(404, "NotFound", "gone"))
    assert h.observed("a")[0].state == UNKNOWN


# --- newcomers: fetched, and retried until they are ---------------------------------------------------


def test_a_newcomer_after_the_list_is_read_with_a_get(h: Harness) -> None:
    h.api.add(CONFIGMAPS, configmap("late", {"k": "v"}))
    h.subscribe("a", ("cfg", ("data",)))
    h.list(configmap("cfg", {"k": "v"}))
    h.subscribe("b", ("late", ("data",)), ("nowhere", ("data",)))
    assert h.subs.observed((NS, "b")) is None  # its first values are being read
    h.woken.clear()
    h.subs.fetcher.step()
    assert [o.state for o in h.observed("b")] == [PRESENT, MISSING]
    assert h.woken == [(NS, "b"), (NS, "b")]
    assert sorted(r.path for r in h.api.sent("GET")) == [
        "/api/v1/namespaces/ns/configmaps/late",
        "/api/v1/namespaces/ns/configmaps/nowhere",
    ]


def test_many_newcomers_are_read_with_one_list(h: Harness) -> None:
    names = [f"cm-{i}" for i in range(streams.FETCH_ONE_BY_ONE + 4)]
    for name in names:
        h.api.add(CONFIGMAPS, configmap(name, {"k": name}))
    h.subscribe("first", ("cm-0", ("data",)))
    h.list(configmap("cm-0", {"k": "cm-0"}))
    h.subscribe("many", *((name, ("metadata.name",)) for name in names))
    h.subs.fetcher.step()
    assert [o.state for o in h.observed("many")] == [PRESENT] * len(names)
    assert [(r.method, r.path) for r in h.api.requests] == [("GET", "/api/v1/namespaces/ns/configmaps")]


@pytest.mark.parametrize(
    "error", [transport.ApiError(500, "InternalError", "etcd is sad"), RuntimeError("a bug while reading")]
)
def test_a_failed_read_is_retried_with_backoff_and_never_dropped(h: Harness, error: BaseException) -> None:
    h.api.add(CONFIGMAPS, configmap("late", {"k": "v"}))
    h.subscribe("a", ("cfg", ("data",)))
    h.list(configmap("cfg", {"k": "v"}))
    h.api.fail("GET", "/api/v1/namespaces/ns/configmaps/late", error, times=2)
    h.subscribe("b", ("late", ("data",)))
    before = metrics.fetch_errors_total._value.get()

    h.subs.fetcher.step()  # fails: retried after 0.5 s
    assert h.subs.observed((NS, "b")) is None
    h.clock.now += 0.4
    h.subs.fetcher.step()  # not due yet: nothing sent
    assert len(h.api.sent("GET")) == 1
    h.clock.now += 0.1
    h.subs.fetcher.step()  # fails again: retried after 1 s
    h.clock.now += 0.9
    h.subs.fetcher.step()
    assert len(h.api.sent("GET")) == 2 and h.subs.observed((NS, "b")) is None
    h.clock.now += 0.1
    h.subs.fetcher.step()
    assert [o.state for o in h.observed("b")] == [PRESENT]
    assert metrics.fetch_errors_total._value.get() - before == 2


def test_a_forbidden_read_marks_the_subscription_forbidden(h: Harness) -> None:
    h.subscribe("a", ("cfg", ("data",)))
    h.list(configmap("cfg", {"k": "v"}))
    h.api.fail("GET", "/api/v1/namespaces/ns/configmaps/late", transport.ApiError(403, "Forbidden", "no"))
    h.subscribe("b", ("late", ("data",)))
    h.subs.fetcher.step()
    assert h.observed("b")[0].state == FORBIDDEN


def test_a_name_is_one_path_segment_never_a_query() -> None:
    """``resources[].name`` such as ``x?watch=1&...`` names an object of that name; sent unescaped, the
    server would read object ``x`` (and the query) instead, and the CTJ would watch the wrong object."""
    h = Harness()
    try:
        h.api.add(CONFIGMAPS, configmap("x", {"k": "someone else's"}))
        h.subscribe("a", ("cfg", ("data",)))
        h.list(configmap("cfg", {"k": "v"}), configmap("x", {"k": "someone else's"}))
        tricky = "x?watch=1&labelSelector=a"
        h.subscribe("b", (tricky, ("data",)))
        h.subs.fetcher.step()
        (seen,) = h.observed("b")
        assert seen.state == MISSING, "the operator read another object than the one named"
        (get,) = h.api.sent("GET")
        assert get.path == "/api/v1/namespaces/ns/configmaps/x%3Fwatch%3D1%26labelSelector%3Da"
    finally:
        h.subs.stop()


def test_paths_escape_names_and_namespaces() -> None:
    assert CONFIGMAPS.path("a b", "c/d?e#f%") == "/api/v1/namespaces/a%20b/configmaps/c%2Fd%3Fe%23f%25"
    assert resources.CTJ.path("ns", "x", subresource="status") == (
        "/apis/triggers.changejob.dev/v1alpha/namespaces/ns/changetriggeredjobs/x/status"
    )
    assert resources.JOB.path() == "/apis/batch/v1/jobs"
    assert resources.VALIDATING_WEBHOOKS.path(name="w") == (
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/w"
    )
    assert resources.group_version_path("v1") == "/api/v1"


# --- hashing holds no shared lock ---------------------------------------------------------------------


class SlowObject(dict[str, Any]):
    """An object whose ``data`` takes until ``release`` is set to read (a costly field path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading = threading.Event()
        self.release = threading.Event()

    def __getitem__(self, key: str) -> Any:
        if key == "data":
            self.reading.set()
            assert self.release.wait(10)
        return super().__getitem__(key)


def test_hashing_one_object_does_not_stop_other_ctjs(h: Harness) -> None:
    """Finding: a costly field path evaluated under the lock shared by all CTJs froze the replica."""
    secrets = resources.ResourceType(group="", version="v1", kind="Secret", plural="secrets", namespaced=True)
    h.subscribe("slow", ("big", ("data",)))
    h.subs.subscribe((NS, "other"), [(api.ResourceRef("v1", "Secret", "s", NS, ("data",)), secrets)])
    other = h.subs.stream(secrets, NS)
    assert other is not None
    h.list()
    slow = SlowObject(configmap("big", {"k": "v"}))
    hashing_thread = threading.Thread(target=h.stream.event, args=("ADDED", slow), daemon=True)
    hashing_thread.start()
    assert slow.reading.wait(5)
    try:
        done = threading.Event()

        def other_ctj_work() -> None:
            other.begin_sync()
            other.synced_object({"metadata": {"name": "s", "namespace": NS}, "data": {"k": "djE="}})
            other.end_sync()
            h.subscribe("third", ("big", ("data",)))
            h.subs.observed((NS, "other"))
            done.set()

        threading.Thread(target=other_ctj_work, daemon=True).start()
        assert done.wait(5), "another CTJ waited for the hashing of an object it does not watch"
        assert h.observed("other")[0].state == PRESENT
    finally:
        slow.release.set()
        hashing_thread.join(5)
    assert h.observed("slow")[0].state == PRESENT
