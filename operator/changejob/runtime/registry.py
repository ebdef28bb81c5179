"""Shared watch streams and the observed hashes of every watched object.

One list+watch stream per (resource type, namespace) serves every CTJ that references that type in
that namespace (cluster-scoped types: one stream per type). An event for an object no CTJ references
is dropped after its name is read; for a referenced one, each subscription's selected fields are
hashed (once per distinct field set) and only a moved hash wakes the CTJ. Objects are never kept:
per subscription only its latest hashes.

What is kept is kept small, since there is one of each per watched object and subscription (20 000
at 10 000 CTJs): an object's subscriptions are a tuple, and an :class:`Observed` holds its digests as
one string (see ``hashing.ObjectHasher.digests``) and unpacks ``hash`` and ``fields`` when asked.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

from changejob.domain import api, hashing
from changejob.kube import discovery, transport, watch
from changejob.telemetry import metrics, tracing

log = logging.getLogger(__name__)

PRESENT, MISSING, FORBIDDEN, UNKNOWN = "Present", "Missing", "Forbidden", "Unknown"
CtjKey = tuple[str, str]
MAX_ORIGINS = 32  # coalesced changes remembered per subscription (for latency and span links)
FETCH_ONE_BY_ONE = 8  # more newcomers than this in one collection: one LIST instead of GETs


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What is known of one watched resource right now.

    ``names`` are the selected fields (the hasher's own tuple, shared) and ``digests`` the combined
    hash then each field's digest, space-separated; empty unless ``state`` is Present.
    """

    state: str = UNKNOWN
    names: tuple[str, ...] = ()
    digests: str = ""
    message: str = ""
    # The changes not yet covered by a trigger: (monotonic time seen, watch span context), oldest
    # first. The oldest gives change-to-Job latency and parents the trigger's trace; the others
    # become span links (coalesced changes). Cleared by Registry.covered.
    origins: tuple[tuple[float, Any], ...] = ()

    @property
    def hash(self) -> str | None:
        """The combined hash of the selected fields; None unless Present."""
        return self.digests.partition(" ")[0] if self.digests else None

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """``((field, digest), ...)`` in spec order; empty unless Present."""
        if not self.digests:
            return ()
        return tuple(zip(self.names, hashing.split_digests(self.digests)[1], strict=True))

    @property
    def changed_at(self) -> float:
        return self.origins[0][0] if self.origins else 0.0


@dataclasses.dataclass(eq=False, slots=True)
class Subscription:
    ctj: CtjKey
    index: int
    ref: api.ResourceRef
    rtype: discovery.ResourceType
    hasher: hashing.ObjectHasher
    observed: Observed = Observed()
    pending: bool = False  # joined a synced stream; its first value is being fetched


class Stream:
    """One collection's list+watch and the subscriptions fed by it."""

    def __init__(self, *, registry: Registry, rtype: discovery.ResourceType, namespace: str | None) -> None:
        self._registry = registry
        self.rtype = rtype
        self.namespace = namespace
        self.by_name: dict[str, tuple[Subscription, ...]] = {}
        self.synced = False
        self.error: transport.ApiError | None = None
        self.seen_in_sync: set[str] = set()
        self.stop = threading.Event()
        self.listwatch = watch.ListWatch(
            transport_=registry.transport,
            path=rtype.collection_path(namespace),
            sink=self,
            stop=self.stop,
            watch_timeout=registry.watch_timeout,
            stall_timeout=registry.stall_timeout,
            name=f"{rtype.plural}.{rtype.group or 'core'}/{namespace or '*'}",
        )
        self.thread = threading.Thread(target=self.listwatch.run, name=f"watch-{self.listwatch.name}", daemon=True)

    # --- watch.Sink -------------------------------------------------------------------------------
    def begin_sync(self) -> None:
        with self._registry.lock:
            self.seen_in_sync = set()

    def synced_object(self, obj: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._registry.lock:
            self.seen_in_sync.add(name)
        self._apply(name, obj)

    def end_sync(self) -> None:
        with self._registry.lock:
            gone = [n for n in self.by_name if n not in self.seen_in_sync]
            self.seen_in_sync = set()
            self.synced = True
            self.error = None
        for name in gone:
            self._apply(name, None)
        self._registry.wake_all(self)

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if name is None or name not in self.by_name:  # unlocked read: a stale miss is fixed by GET
            return
        self._apply(name, None if kind == "DELETED" else obj)

    def failed(self, error: transport.ApiError) -> None:
        message = access_message(error, self.rtype, self.namespace)
        state = FORBIDDEN if error.forbidden else UNKNOWN
        with self._registry.lock:
            self.error = error
            subs = [s for group in self.by_name.values() for s in group]
            for sub in subs:
                sub.observed = Observed(state=state, message=message)
                sub.pending = False
        for key in {s.ctj for s in subs}:
            self._registry.notify(key)

    # --- hashing ----------------------------------------------------------------------------------
    def _apply(self, name: str, obj: Mapping[str, Any] | None, *, only_pending: bool = False) -> None:
        """Recompute the subscriptions of ``name`` from ``obj`` (None: the object does not exist).

        ``only_pending``: ``obj`` comes from a separate read that may be older than a watch event
        already applied, so only subscriptions still waiting for their first value take it.
        """
        woken: set[CtjKey] = set()
        with self._registry.lock:
            subs = self.by_name.get(name)
            if only_pending and subs:
                subs = tuple(s for s in subs if s.pending)
            if not subs:
                return
            for sub in subs:
                if sub.pending:
                    sub.pending = False
                    woken.add(sub.ctj)  # it waits for this value even if it equals the default
            per_hasher: dict[int, Observed] = {}
            moved: list[tuple[Subscription, Observed]] = []
            for sub in subs:
                new = per_hasher.get(id(sub.hasher))
                if new is None:
                    if obj is None:
                        new = Observed(state=MISSING, message=f"{sub.ref.describe()} not found")
                    else:
                        new = Observed(state=PRESENT, names=sub.hasher.fields, digests=sub.hasher.digests(obj))
                    per_hasher[id(sub.hasher)] = new
                old = sub.observed
                if (old.state, old.digests) != (new.state, new.digests):
                    moved.append((sub, new))
            if moved:
                context = tracing_context(self, name, [s for s, _ in moved])
                seen_at = time.monotonic()
                for sub, new in moved:
                    origins = (*sub.observed.origins, (seen_at, context))[-MAX_ORIGINS:]
                    sub.observed = dataclasses.replace(new, origins=origins)
                    woken.add(sub.ctj)
        for key in woken:
            self._registry.notify(key)


def tracing_context(stream: Stream, name: str, subs: list[Subscription]) -> Any:
    """Record the watch event that moved a hash as a span; its context parents the trigger's trace."""
    tracer = tracing.tracer()
    with tracer.start_as_current_span(
        "watch.event",
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "k8s.resource.kind": stream.rtype.kind,
            "k8s.resource.api_version": stream.rtype.api_version,
            "k8s.namespace.name": stream.namespace or "",
            "k8s.object.name": name,
            "changejob.ctjs": sorted({f"{s.ctj[0]}/{s.ctj[1]}" for s in subs}),
            "changejob.fields": sorted({f for s in subs for f in s.ref.fields}),
        },
    ) as span:
        context = span.get_span_context()
    return context if context.is_valid else None


def access_message(error: transport.ApiError, rtype: discovery.ResourceType, namespace: str | None) -> str:
    """Say which RBAC rule is missing, in terms the chart's values use."""
    where = f'in namespace "{namespace}"' if namespace else "cluster-wide"
    if error.forbidden:
        return (
            f"the operator may not list/watch {rtype.plural} ({rtype.api_version}) {where}: "
            f'grant get, list, watch on apiGroups ["{rtype.group}"] resources ["{rtype.plural}"] '
            f"to the operator's ServiceAccount (Helm chart value watch.resources)"
        )
    return f"cannot watch {rtype.plural} {where}: {error}"


class Registry:
    """All streams and subscriptions of this replica."""

    def __init__(
        self,
        *,
        transport_: transport.Transport,
        notify: Callable[[CtjKey], None],
        hash_key: bytes | None,
        watch_timeout: float = 300.0,
        stall_timeout: float = 120.0,
    ) -> None:
        self.transport = transport_
        self.notify = notify
        self.watch_timeout = watch_timeout
        self.stall_timeout = stall_timeout
        self._hash_key = hash_key
        self.lock = threading.RLock()
        self._streams: dict[tuple[discovery.ResourceType, str | None], Stream] = {}
        self._subs: dict[CtjKey, tuple[Subscription, ...]] = {}
        self._hashers: dict[tuple[tuple[str, ...], bool], hashing.ObjectHasher] = {}
        self._pending: dict[Stream, set[str]] = {}
        self._fetch_wake = threading.Event()
        self._stopped = threading.Event()
        threading.Thread(target=self._fetch_loop, name="registry-fetch", daemon=True).start()

    def _hasher(self, ref: api.ResourceRef) -> hashing.ObjectHasher:
        keyed = ref.kind == "Secret" and ref.group == ""
        key = (ref.fields, keyed)
        found = self._hashers.get(key)
        if found is None:
            found = hashing.ObjectHasher(fields=ref.fields, key=self._hash_key if keyed else None)
            self._hashers[key] = found
        return found

    def subscribe(self, ctj: CtjKey, wanted: list[tuple[api.ResourceRef, discovery.ResourceType]]) -> None:
        """Make ``ctj``'s subscriptions exactly ``wanted`` (in spec order)."""
        with self.lock:
            current = self._subs.get(ctj, ())
            if [(s.ref, s.rtype) for s in current] == wanted:
                return
            self._unsubscribe_locked(ctj)
            subs = []
            for index, (ref, rtype) in enumerate(wanted):
                sub = Subscription(ctj=ctj, index=index, ref=ref, rtype=rtype, hasher=self._hasher(ref))
                stream = self._stream_locked(rtype, ref.namespace if rtype.namespaced else None)
                group = stream.by_name.get(ref.name, ())
                if stream.error is not None:
                    sub.observed = Observed(
                        state=FORBIDDEN if stream.error.forbidden else UNKNOWN,
                        message=access_message(stream.error, rtype, stream.namespace),
                    )
                elif not stream.synced and ref.name in stream.seen_in_sync:
                    # The running first list already passed this object: read it separately.
                    sub.pending = True
                    self._pending.setdefault(stream, set()).add(ref.name)
                    self._fetch_wake.set()
                elif stream.synced:
                    twin = next((s for s in group if s.hasher is sub.hasher and not s.pending), None)
                    if twin is not None:  # another CTJ already sees this object through these fields
                        sub.observed = twin.observed
                    else:  # read it, batched with other newcomers (see _fetch_loop)
                        sub.pending = True
                        self._pending.setdefault(stream, set()).add(ref.name)
                        self._fetch_wake.set()
                stream.by_name[ref.name] = (*group, sub)
                subs.append(sub)
            self._subs[ctj] = tuple(subs)
            metrics.watched_objects.set(sum(len(s.by_name) for s in self._streams.values()))

    def _fetch_loop(self) -> None:
        """First values for subscriptions that joined an already-synced stream.

        Newcomers are batched for a moment: a few are read with one GET each, many (a restart, a shard
        handover) with one paginated LIST of their collection instead of thousands of GETs.
        """
        while not self._stopped.is_set():
            self._fetch_wake.wait(1.0)
            if self._stopped.wait(0.02):
                return
            with self.lock:
                self._fetch_wake.clear()
                batch, self._pending = self._pending, {}
            for stream, names in batch.items():
                if stream.stop.is_set():
                    continue
                try:
                    self._fetch(stream, names)
                except transport.ApiError as exc:
                    log.warning("could not read %d %s: %s", len(names), stream.rtype.plural, exc)
                    if exc.status in (401, 403):
                        stream.failed(exc)
                    else:  # try again shortly
                        with self.lock:
                            self._pending.setdefault(stream, set()).update(names)
                        self._stopped.wait(1.0)
                        self._fetch_wake.set()
                except Exception:
                    log.exception("reading %s failed", stream.rtype.plural)

    def _fetch(self, stream: Stream, names: set[str]) -> None:
        if len(names) <= FETCH_ONE_BY_ONE:
            for name in names:
                path = stream.rtype.object_path(namespace=stream.namespace, name=name)
                try:
                    obj = self.transport.request(
                        "GET", path, span_resource=stream.rtype.plural, namespace=stream.namespace, name=name
                    )
                except transport.ApiError as exc:
                    if not exc.not_found:
                        raise
                    obj = None
                stream._apply(name, obj, only_pending=True)
            return
        path = stream.rtype.collection_path(stream.namespace)
        found: set[str] = set()
        cont: str | None = None

        def take(item: Mapping[str, Any]) -> None:
            name = item["metadata"]["name"]
            if name in names:
                found.add(name)
                stream._apply(name, item, only_pending=True)

        while True:
            page = self.transport.request(
                "GET",
                path,
                query={"limit": 500, "continue": cont},
                span_resource=stream.rtype.plural,
                timeout=(5.0, 60.0),
            )
            items, meta = page.get("items") or [], page.get("metadata") or {}
            del page
            watch.hand_over(items, take)
            cont = meta.get("continue") or None
            if not cont:
                break
        for name in names - found:
            stream._apply(name, None, only_pending=True)

    def _stream_locked(self, rtype: discovery.ResourceType, namespace: str | None) -> Stream:
        key = (rtype, namespace)
        stream = self._streams.get(key)
        if stream is None:
            stream = Stream(registry=self, rtype=rtype, namespace=namespace)
            self._streams[key] = stream
            stream.thread.start()
            metrics.watch_streams.set(len(self._streams))
        return stream

    def unsubscribe(self, ctj: CtjKey) -> None:
        with self.lock:
            self._unsubscribe_locked(ctj)

    def _unsubscribe_locked(self, ctj: CtjKey) -> None:
        for sub in self._subs.pop(ctj, ()):
            stream = self._streams[(sub.rtype, sub.ref.namespace if sub.rtype.namespaced else None)]
            group = stream.by_name.get(sub.ref.name)
            if group is not None:
                rest = tuple(s for s in group if s is not sub)
                if rest:
                    stream.by_name[sub.ref.name] = rest
                else:
                    del stream.by_name[sub.ref.name]
            if not stream.by_name:  # nobody needs this collection any more
                stream.stop.set()
                del self._streams[(stream.rtype, stream.namespace)]
        metrics.watch_streams.set(len(self._streams))
        metrics.watched_objects.set(sum(len(s.by_name) for s in self._streams.values()))

    def observed(self, ctj: CtjKey) -> list[Observed] | None:
        """The observed state of each of ``ctj``'s resources; None until every stream has synced."""
        with self.lock:
            subs = self._subs.get(ctj)
            if subs is None:
                return None
            out = []
            for sub in subs:
                stream = self._streams[(sub.rtype, sub.ref.namespace if sub.rtype.namespaced else None)]
                if (not stream.synced and stream.error is None) or sub.pending:
                    return None
                out.append(sub.observed)
            return out

    def covered(self, ctj: CtjKey, index: int, seen: Observed) -> None:
        """The changes in ``seen`` are accounted for (triggered, reverted or baselined): forget them.

        Only if the subscription still holds exactly ``seen``: a change that arrived meanwhile stays.
        """
        with self.lock:
            subs = self._subs.get(ctj)
            if subs and index < len(subs) and subs[index].observed is seen and seen.origins:
                subs[index].observed = dataclasses.replace(seen, origins=())

    def wake_all(self, stream: Stream) -> None:
        with self.lock:
            keys = {s.ctj for group in stream.by_name.values() for s in group}
        for key in keys:
            self.notify(key)

    def synced(self) -> bool:
        with self.lock:
            return all(s.synced or s.error is not None for s in self._streams.values())

    def stop(self) -> None:
        self._stopped.set()
        with self.lock:
            for stream in self._streams.values():
                stream.stop.set()
