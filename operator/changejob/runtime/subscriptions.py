"""The subscriptions of CTJs to watched objects, and what is observed of each.

Every resource of every owned CTJ is a :class:`Subscription` to one object of one collection. The
subscriptions to a collection's objects are a :class:`Collection`, fed by that collection's shared
``streams.Stream`` (one per resource type and namespace, however many CTJs). For each object
update a collection hashes the selected fields once per distinct field set and wakes only the CTJs
whose hashes moved. Objects are never kept: per subscription only its latest ``Observed``.

Hashing runs outside the lock shared by all subscriptions: an object whose field paths are costly to
evaluate delays only its own stream, never the other CTJs (their subscribes, reconciles and streams).

A subscriber that joins a collection after its list has passed the object reads it separately
(:class:`Fetcher`): batched, retried with backoff on any failure, never dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace

from changejob.domain import api, hashing
from changejob.domain.observed import FORBIDDEN, MISSING, PRESENT, UNKNOWN, Observed
from changejob.kube import resources, transport
from changejob.runtime import streams
from changejob.telemetry import metrics, tracing

log = logging.getLogger(__name__)

NOT_YET: Final = Observed()  # the value of a subscription whose object has not been seen yet
MAX_ORIGINS: Final = 32  # coalesced changes remembered per subscription (for latency and span links)
Clock = Callable[[], float]
Wanted = list[tuple[api.ResourceRef, resources.ResourceType]]


@dataclasses.dataclass(eq=False, slots=True)
class Subscription:
    ctj: api.CtjKey
    index: int
    ref: api.ResourceRef
    collection: Collection
    hasher: hashing.ObjectHasher
    observed: Observed = NOT_YET
    pending: bool = False  # joined after the list passed its object; its first value is being read


class Collection:
    """The subscriptions to one collection's objects, by object name (a ``streams.Consumer``).

    Shares the lock of :class:`Subscriptions`; holds it only to read and replace subscriptions,
    never while hashing.
    """

    def __init__(
        self,
        *,
        rtype: resources.ResourceType,
        namespace: str | None,
        lock: threading.RLock,
        notify: Callable[[api.CtjKey], None],
        clock: Clock,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.by_name: dict[str, tuple[Subscription, ...]] = {}
        self.ready = False  # a list has been handed over (and its absent objects marked Missing)
        self.error: transport.ApiError | None = None
        self._lock = lock
        self._notify = notify
        self._clock = clock

    # --- streams.Consumer -------------------------------------------------------------------------
    def wants(self, name: str) -> bool:
        return name in self.by_name

    def names(self) -> list[str]:
        with self._lock:
            return list(self.by_name)

    def update(self, name: str, obj: Mapping[str, Any] | None, *, only_pending: bool = False) -> None:
        """Recompute the subscriptions of ``name`` from ``obj`` (None: the object does not exist).

        ``only_pending``: ``obj`` comes from a separate read that may be older than a watch event
        already applied, so only subscriptions still waiting for their first value take it.
        """
        with self._lock:
            hashers = {
                id(s.hasher): s for s in self.by_name.get(name, ()) if s.pending or not only_pending
            }  # one subscription per distinct field set
        if not hashers:
            return
        values = {key: _observe(sub, obj) for key, sub in hashers.items()}  # the costly part: unlocked
        for key in self._commit(name, values, only_pending=only_pending):
            self._notify(key)

    def _commit(self, name: str, values: Mapping[int, Observed], *, only_pending: bool) -> set[api.CtjKey]:
        """Give each subscription of ``name`` its new value (by hasher); the CTJs to wake."""
        woken: set[api.CtjKey] = set()
        with self._lock:
            moved: list[tuple[Subscription, Observed]] = []
            for sub in self.by_name.get(name, ()):
                new = values.get(id(sub.hasher))
                if new is None or (only_pending and not sub.pending):
                    continue  # a newcomer with other fields is pending: its own read is on its way
                if sub.pending:
                    sub.pending = False
                    woken.add(sub.ctj)  # it waits for this value even if it equals the default
                if not sub.observed.same_value(new):
                    moved.append((sub, new))
            if moved:
                context = _watch_span(self, name, [s for s, _ in moved])
                seen_at = self._clock()
                for sub, new in moved:
                    origins = (*sub.observed.origins, (seen_at, context))[-MAX_ORIGINS:]
                    sub.observed = dataclasses.replace(new, origins=origins)
                    woken.add(sub.ctj)
        return woken

    def synced(self) -> None:
        with self._lock:
            self.ready = True
            self.error = None
            keys = {s.ctj for group in self.by_name.values() for s in group}
        for key in keys:
            self._notify(key)

    def failed(self, error: transport.ApiError) -> None:
        message = access_message(error, self.rtype, self.namespace)
        state = FORBIDDEN if error.forbidden else UNKNOWN
        with self._lock:
            self.error = error
            subs = [s for group in self.by_name.values() for s in group]
            for sub in subs:
                sub.observed = Observed(state=state, message=message)
                sub.pending = False
        for key in {s.ctj for s in subs}:
            self._notify(key)

    def failure(self) -> Observed | None:
        """What a subscriber learns at once while the collection cannot be watched (lock held)."""
        if self.error is None:
            return None
        state = FORBIDDEN if self.error.forbidden else UNKNOWN
        return Observed(state=state, message=access_message(self.error, self.rtype, self.namespace))


def _observe(sub: Subscription, obj: Mapping[str, Any] | None) -> Observed:
    if obj is None:
        return Observed(state=MISSING, message=f"{sub.ref.describe()} not found")
    return Observed(state=PRESENT, names=sub.hasher.fields, digests=sub.hasher.digests(obj))


def _watch_span(collection: Collection, name: str, subs: list[Subscription]) -> Any:
    """Record the watch event that moved a hash as a span; its context parents the trigger's trace."""
    with tracing.tracer().start_as_current_span(
        "watch.event",
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "k8s.resource.kind": collection.rtype.kind,
            "k8s.resource.api_version": collection.rtype.api_version,
            "k8s.namespace.name": collection.namespace or "",
            "k8s.object.name": name,
            "changejob.ctjs": sorted({f"{s.ctj[0]}/{s.ctj[1]}" for s in subs}),
            "changejob.fields": sorted({f for s in subs for f in s.ref.fields}),
        },
    ) as span:
        context = span.get_span_context()
    return context if context.is_valid else None


def access_message(error: transport.ApiError, rtype: resources.ResourceType, namespace: str | None) -> str:
    """Say which RBAC rule is missing, in terms the chart's values use."""
    where = f'in namespace "{namespace}"' if namespace else "cluster-wide"
    if error.forbidden:
        return (
            f"the operator may not list/watch {rtype.plural} ({rtype.api_version}) {where}: "
            f'grant get, list, watch on apiGroups ["{rtype.group}"] resources ["{rtype.plural}"] '
            f"to the operator's ServiceAccount (Helm chart value watch.resources)"
        )
    return f"cannot watch {rtype.plural} {where}: {error}"


class Fetcher:
    """Reads the first value of subscriptions that joined after their stream's list passed them.

    Newcomers are batched for a moment (a restart or a shard handover brings thousands at once; a
    stream reads many with one LIST). A read that fails — an API error or anything unexpected — is
    logged, counted in ``changejob_fetch_errors_total`` and retried with backoff per stream
    (``retry_base`` doubling up to ``retry_cap`` seconds); its names are never dropped. A 401/403
    marks the collection Forbidden instead: its stream retries the list, and a list sets every value.
    """

    def __init__(
        self,
        *,
        streams_of: Callable[[Collection], streams.Stream | None],
        clock: Clock = time.monotonic,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None:
        self._streams_of = streams_of
        self._clock = clock
        self._base = retry_base
        self._cap = retry_cap
        self._lock = threading.Lock()
        self._pending: dict[Collection, set[str]] = {}
        self._failures: dict[Collection, int] = {}
        self._not_before: dict[Collection, float] = {}
        self.wake = threading.Event()
        self.stopped = threading.Event()

    def want(self, collection: Collection, name: str) -> None:
        with self._lock:
            self._pending.setdefault(collection, set()).add(name)
        self.wake.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(self._next_wait())
            if self.stopped.wait(0.02):  # let a burst of newcomers gather
                return
            self.step()

    def _next_wait(self) -> float:
        with self._lock:
            waiting = [self._not_before.get(c, 0.0) for c in self._pending]
        if not waiting:
            return 1.0
        return max(0.0, min(1.0, min(waiting) - self._clock()))

    def step(self) -> None:
        """Read every batch that is due now."""
        now = self._clock()
        with self._lock:
            self.wake.clear()
            due = {c: names for c, names in self._pending.items() if self._not_before.get(c, 0.0) <= now}
            for collection in due:
                del self._pending[collection]
        for collection, names in due.items():
            self._read(collection, names)

    def _read(self, collection: Collection, names: set[str]) -> None:
        stream = self._streams_of(collection)
        if stream is None:  # nobody needs the collection any more
            return
        try:
            stream.read(names, lambda name, obj: collection.update(name, obj, only_pending=True))
        except transport.ApiError as exc:
            if exc.status in (401, 403):
                log.warning("could not read %d %s: %s", len(names), collection.rtype.plural, exc)
                collection.failed(exc)
            else:
                self._retry(collection, names, f"could not read {len(names)} {collection.rtype.plural}: {exc}")
        except Exception:
            log.exception("reading %d %s failed", len(names), collection.rtype.plural)
            self._retry(collection, names, "")
        else:
            with self._lock:
                self._failures.pop(collection, None)
                self._not_before.pop(collection, None)

    def _retry(self, collection: Collection, names: set[str], warning: str) -> None:
        metrics.fetch_errors_total.inc()
        with self._lock:
            failures = self._failures.get(collection, 0) + 1
            self._failures[collection] = failures
            delay = min(self._cap, self._base * 2.0 ** (failures - 1))
            self._not_before[collection] = self._clock() + delay
            self._pending.setdefault(collection, set()).update(names)
        if warning:
            log.warning("%s; retrying in %.1fs", warning, delay)
        self.wake.set()

    def forget(self, collection: Collection) -> None:
        with self._lock:
            self._pending.pop(collection, None)
            self._failures.pop(collection, None)
            self._not_before.pop(collection, None)


class Subscriptions:
    """All collections and subscriptions of this replica: subscribe, observe, unsubscribe."""

    def __init__(
        self,
        *,
        transport_: transport.Transport,
        notify: Callable[[api.CtjKey], None],
        hash_key: bytes | None,
        watch_timeout: float = 300.0,
        stall_timeout: float = 120.0,
        clock: Clock = time.monotonic,
        start: bool = True,
    ) -> None:
        self._t = transport_
        self._notify = notify
        self._hash_key = hash_key
        self._watch_timeout = watch_timeout
        self._stall_timeout = stall_timeout
        self._clock = clock
        self._start = start  # False (tests): streams and the fetcher are driven by hand
        self._lock = threading.RLock()
        self._collections: dict[tuple[resources.ResourceType, str | None], Collection] = {}
        self._streams: dict[Collection, streams.Stream] = {}
        self._subs: dict[api.CtjKey, tuple[Subscription, ...]] = {}
        self._hashers: dict[tuple[tuple[str, ...], bool], hashing.ObjectHasher] = {}
        self.fetcher = Fetcher(streams_of=self._streams.get, clock=clock)
        if start:
            threading.Thread(target=self.fetcher.run, name="fetch-newcomers", daemon=True).start()

    def subscribe(self, ctj: api.CtjKey, wanted: Wanted) -> None:
        """Make ``ctj``'s subscriptions exactly ``wanted`` (in spec order)."""
        with self._lock:
            current = self._subs.get(ctj, ())
            if [(s.ref, s.collection.rtype) for s in current] == wanted:
                return
            self._unsubscribe_locked(ctj)
            subs = tuple(self._join_locked(ctj, index, ref, rtype) for index, (ref, rtype) in enumerate(wanted))
            self._subs[ctj] = subs
            self._count_locked()

    def _join_locked(
        self, ctj: api.CtjKey, index: int, ref: api.ResourceRef, rtype: resources.ResourceType
    ) -> Subscription:
        collection = self._collection_locked(rtype, ref.namespace if rtype.namespaced else None)
        stream = self._streams[collection]
        sub = Subscription(ctj=ctj, index=index, ref=ref, collection=collection, hasher=self._hasher(ref))
        group = collection.by_name.get(ref.name, ())
        failure = collection.failure()
        if failure is not None:
            sub.observed = failure
        elif stream.synced:
            twin = next((s for s in group if s.hasher is sub.hasher and not s.pending), None)
            if twin is not None:  # another CTJ already sees this object through these fields
                sub.observed = twin.observed
            else:  # read it, batched with other newcomers
                sub.pending = True
                self.fetcher.want(collection, ref.name)
        elif stream.listed(ref.name):  # the running first list already passed it: read it separately
            sub.pending = True
            self.fetcher.want(collection, ref.name)
        collection.by_name[ref.name] = (*group, sub)
        return sub

    def _hasher(self, ref: api.ResourceRef) -> hashing.ObjectHasher:
        keyed = ref.kind == "Secret" and ref.group == ""
        key = (ref.fields, keyed)
        found = self._hashers.get(key)
        if found is None:
            found = hashing.ObjectHasher(fields=ref.fields, key=self._hash_key if keyed else None)
            self._hashers[key] = found
        return found

    def _collection_locked(self, rtype: resources.ResourceType, namespace: str | None) -> Collection:
        found = self._collections.get((rtype, namespace))
        if found is not None:
            return found
        collection = Collection(
            rtype=rtype, namespace=namespace, lock=self._lock, notify=self._notify, clock=self._clock
        )
        stream = streams.Stream(
            transport_=self._t,
            rtype=rtype,
            namespace=namespace,
            consumer=collection,
            watch_timeout=self._watch_timeout,
            stall_timeout=self._stall_timeout,
        )
        self._collections[(rtype, namespace)] = collection
        self._streams[collection] = stream
        if self._start:
            stream.start()
        return collection

    def stream(self, rtype: resources.ResourceType, namespace: str | None) -> streams.Stream | None:
        """The stream of a collection that has subscribers."""
        with self._lock:
            collection = self._collections.get((rtype, namespace))
            return None if collection is None else self._streams.get(collection)

    def unsubscribe(self, ctj: api.CtjKey) -> None:
        with self._lock:
            self._unsubscribe_locked(ctj)
            self._count_locked()

    def _unsubscribe_locked(self, ctj: api.CtjKey) -> None:
        for sub in self._subs.pop(ctj, ()):
            collection = sub.collection
            group = collection.by_name.get(sub.ref.name)
            if group is not None:
                rest = tuple(s for s in group if s is not sub)
                if rest:
                    collection.by_name[sub.ref.name] = rest
                else:
                    del collection.by_name[sub.ref.name]
            if not collection.by_name and collection in self._streams:  # nobody needs it any more
                self._streams.pop(collection).stop.set()
                del self._collections[(collection.rtype, collection.namespace)]
                self.fetcher.forget(collection)

    def _count_locked(self) -> None:
        metrics.watch_streams.set(len(self._streams))
        metrics.watched_objects.set(sum(len(c.by_name) for c in self._collections.values()))

    def observed(self, ctj: api.CtjKey) -> list[Observed] | None:
        """The observed state of each of ``ctj``'s resources; None until every one is known."""
        with self._lock:
            subs = self._subs.get(ctj)
            if subs is None:
                return None
            out = []
            for sub in subs:
                if (not sub.collection.ready and sub.collection.error is None) or sub.pending:
                    return None
                out.append(sub.observed)
            return out

    def covered(self, ctj: api.CtjKey, index: int, seen: Observed) -> None:
        """The changes in ``seen`` are accounted for (triggered, reverted or baselined): forget them.

        Only if the subscription still holds exactly ``seen``: a change that arrived meanwhile stays.
        """
        with self._lock:
            subs = self._subs.get(ctj)
            if subs and index < len(subs) and subs[index].observed is seen and seen.origins:
                subs[index].observed = dataclasses.replace(seen, origins=())

    def synced(self) -> bool:
        with self._lock:
            return all(c.ready or c.error is not None for c in self._collections.values())

    def stop(self) -> None:
        self.fetcher.stopped.set()
        self.fetcher.wake.set()
        with self._lock:
            for stream in self._streams.values():
                stream.stop.set()
