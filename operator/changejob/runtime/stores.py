"""In-memory views fed by watches: the CTJs this replica handles and the Jobs they created.

The CTJ store keeps each CTJ without managedFields (the reconciler needs its spec, status and
resourceVersion). The Job index keeps per CTJ only a ``jobs.JobView`` of each of its Jobs (name,
phase, trigger sequence, creation time, owner) — enough for ``lastJobStatus`` and for pruning
without a single list request. A relist drops what it no longer returns (``watch.Relist``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from changejob.domain import api, bodies, jobs
from changejob.kube import watch


def slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without the bulky metadata the operator never reads."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    out["metadata"] = meta
    return out


def pack(obj: Mapping[str, Any]) -> bytes:
    """``obj`` as compact JSON, in a bytes object of exactly that size.

    ``orjson.dumps`` output keeps the writer's whole buffer (at least 4 KiB; 8 KiB for a CTJ of
    2.4 KB with orjson 3.13): kept for 10 000 CTJs that was 80 MiB where 24 MiB are needed. The copy
    costs about a microsecond. Compressing (zlib, a third of the size) was measured and left out: at
    ~30 µs per CTJ on the list path it slowed a restart at 10 000 CTJs from ~7 s to ~12 s to ready.
    """
    return memoryview(orjson.dumps(obj)).tobytes()


def unpack(data: bytes) -> Any:
    """The object :func:`pack` packed."""
    return orjson.loads(data)


class CtjStore:
    """Latest CTJ objects by (namespace, name); ``accept`` filters which ones are kept.

    Each is kept as compact JSON (:func:`pack`: about 2.4 KB for a CTJ with its status) and parsed on
    ``get`` (about 20 µs): as Python dicts, 10 000 CTJs with their status would cost several times
    the memory of everything else together.
    """

    def __init__(self, *, notify: Callable[[api.CtjKey], None], accept: Callable[[api.CtjKey], bool]) -> None:
        self._notify = notify
        self.accept = accept
        self._lock = threading.Lock()
        self._items: dict[api.CtjKey, tuple[int, bytes]] = {}
        self._relist: watch.Relist[api.CtjKey] = watch.Relist()
        self.synced = threading.Event()
        self.on_synced: Callable[[], None] | None = None

    @staticmethod
    def key_of(obj: Mapping[str, Any]) -> api.CtjKey:
        meta = obj["metadata"]
        # One string object per namespace however many CTJs (and watch events) name it.
        return (sys.intern(meta["namespace"]), meta["name"])

    def get(self, key: api.CtjKey) -> bodies.Ctj | None:
        with self._lock:
            found = self._items.get(key)
        if found is None:
            return None
        obj: bodies.Ctj = unpack(found[1])
        return obj

    def _store(self, key: api.CtjKey, obj: Mapping[str, Any]) -> None:
        self._items[key] = (_rv(obj), pack(slim(obj)))

    def all_keys(self) -> list[api.CtjKey]:
        with self._lock:
            return list(self._items)

    def count(self) -> int:
        return len(self._items)

    def put(self, obj: Mapping[str, Any]) -> None:
        """Replace a held CTJ with a fresher copy (e.g. the answer to our own status write).

        Only a CTJ still held and still accepted is replaced: a status write that returns after its
        CTJ was dropped (deleted, or its shard handed to another replica meanwhile) must not bring
        it back, or this replica would keep a CTJ it no longer owns.
        """
        key = self.key_of(obj)
        with self._lock:
            old = self._items.get(key)
            if old is None or old[0] > _rv(obj):
                return
            if not self.accept(key):
                del self._items[key]
                return
            self._store(key, obj)

    def drop(self, key: api.CtjKey) -> None:
        with self._lock:
            self._items.pop(key, None)

    # watch.Sink
    def begin_sync(self) -> None:
        with self._lock:
            self._relist.begin()

    def synced_object(self, obj: Mapping[str, Any]) -> None:
        key = self.key_of(obj)
        with self._lock:
            self._relist.saw(key)
        self.event("ADDED", obj)

    def end_sync(self) -> None:
        with self._lock:
            gone = self._relist.end(list(self._items))
            for key in gone:
                del self._items[key]
        for key in gone:
            self._notify(key)
        self.synced.set()
        if self.on_synced is not None:
            self.on_synced()

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        # ``accept`` is asked under the lock: a shard handover changes ownership first and then drops
        # the CTJs it lost (``all_keys``, ``drop``), so no event can slip a lost CTJ back in between.
        key = self.key_of(obj)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(key, None)
            elif self.accept(key):
                self._store(key, obj)
            else:
                self._items.pop(key, None)
                return
        self._notify(key)

    def failed(self, error: Exception) -> None:  # the CTJ watch failing is logged by the watch loop
        del error


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class JobIndex:
    """Jobs labelled ``changejob.dev/owner``, grouped by owning CTJ."""

    def __init__(self, *, notify: Callable[[api.CtjKey], None]) -> None:
        self._notify = notify
        self._lock = threading.Lock()
        self._by_ctj: dict[api.CtjKey, dict[str, jobs.JobView]] = {}
        self._relist: watch.Relist[tuple[api.CtjKey, str]] = watch.Relist()
        self.synced = threading.Event()

    def jobs_of(self, key: api.CtjKey) -> list[jobs.JobView]:
        with self._lock:
            return list(self._by_ctj.get(key, {}).values())

    def record(self, job: Mapping[str, Any]) -> None:
        """Index a Job we just created, before its watch event arrives."""
        self.event("ADDED", job, notify=False)

    @staticmethod
    def _key(job: Mapping[str, Any]) -> api.CtjKey | None:
        meta = job.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(jobs.OWNER_LABEL)
        return (meta.get("namespace", ""), owner) if owner else None

    def begin_sync(self) -> None:
        with self._lock:
            self._relist.begin()

    def synced_object(self, obj: Mapping[str, Any]) -> None:
        key = self._key(obj)
        if key is not None:
            with self._lock:
                self._relist.saw((key, obj["metadata"]["name"]))
        self.event("ADDED", obj)

    def end_sync(self) -> None:
        with self._lock:
            held = [(key, name) for key, group in self._by_ctj.items() for name in group]
            gone = self._relist.end(held)
            for key, name in gone:
                del self._by_ctj[key][name]
        for key in {key for key, _ in gone}:
            self._notify(key)
        self.synced.set()

    def event(self, kind: str, obj: Mapping[str, Any], *, notify: bool = True) -> None:
        key = self._key(obj)
        if key is None:
            return
        name = obj["metadata"]["name"]
        with self._lock:
            group = self._by_ctj.setdefault(key, {})
            if kind == "DELETED":
                group.pop(name, None)
                if not group:
                    del self._by_ctj[key]
            else:
                view = jobs.view(obj)
                if group.get(name) == view:
                    return
                group[name] = view
        if notify:
            self._notify(key)

    def failed(self, error: Exception) -> None:
        del error
