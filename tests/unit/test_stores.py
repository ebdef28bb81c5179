"""The CTJ store: which CTJs a replica keeps as shards move and status writes come back."""

from __future__ import annotations

from typing import Any

from changejob.runtime import stores


def ctj(name: str, rv: int, status: str = "") -> dict[str, Any]:
    meta = {"namespace": "ns", "name": name, "resourceVersion": str(rv), "managedFields": [{"manager": "x"}]}
    return {"metadata": meta, "spec": {}, "status": {"note": status}}


class Owned:
    """The replica's owned keys, changed by the test as a shard handover would."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.notified: list[tuple[str, str]] = []

    def accept(self, key: tuple[str, str]) -> bool:
        return key[1] in self.names

    def store(self) -> stores.CtjStore:
        return stores.CtjStore(notify=self.notified.append, accept=self.accept)


def test_events_keep_only_accepted_ctjs_without_managed_fields() -> None:
    owned = Owned("a")
    store = owned.store()
    store.event("ADDED", ctj("a", 1))
    store.event("ADDED", ctj("b", 1))
    assert store.all_keys() == [("ns", "a")]
    assert owned.notified == [("ns", "a")]
    got = store.get(("ns", "a"))
    assert got is not None and "managedFields" not in got["metadata"]
    owned.names.clear()
    store.event("MODIFIED", ctj("a", 2))  # its shard went elsewhere: the next event drops it
    assert store.all_keys() == []


def test_a_status_write_answer_replaces_only_a_held_ctj_with_an_older_version() -> None:
    owned = Owned("a")
    store = owned.store()
    store.event("ADDED", ctj("a", 5, "watch"))
    store.put(ctj("a", 4, "stale"))
    assert store.get(("ns", "a"))["status"]["note"] == "watch"  # type: ignore[index]
    store.put(ctj("a", 6, "written"))
    assert store.get(("ns", "a"))["status"]["note"] == "written"  # type: ignore[index]


def test_a_status_write_answer_does_not_bring_back_a_dropped_ctj() -> None:
    """A reconcile still writing status when the shard is handed over (or the CTJ deleted): the answer
    must not put the CTJ back, or the replica would keep (and count) a CTJ another replica owns."""
    owned = Owned("a", "b")
    store = owned.store()
    store.event("ADDED", ctj("a", 1))
    store.event("ADDED", ctj("b", 1))
    owned.names.discard("a")
    store.drop(("ns", "a"))  # what the manager does for CTJs of lost shards
    store.put(ctj("a", 2))
    store.event("DELETED", ctj("b", 1))
    store.put(ctj("b", 2))
    assert store.all_keys() == []


def test_a_status_write_answer_for_a_ctj_no_longer_accepted_drops_it() -> None:
    owned = Owned("a")
    store = owned.store()
    store.event("ADDED", ctj("a", 1))
    owned.names.clear()
    store.put(ctj("a", 2))
    assert store.get(("ns", "a")) is None


def test_a_resync_list_drops_ctjs_it_no_longer_contains() -> None:
    owned = Owned("a", "b")
    store = owned.store()
    synced: list[bool] = []
    store.on_synced = lambda: synced.append(store.synced.is_set())
    store.event("ADDED", ctj("a", 1))
    store.event("ADDED", ctj("b", 1))
    owned.notified.clear()
    store.begin_sync()
    store.synced_object(ctj("a", 2))
    store.end_sync()
    assert store.all_keys() == [("ns", "a")]
    assert sorted(owned.notified) == [("ns", "a"), ("ns", "b")]
    assert synced == [True]
