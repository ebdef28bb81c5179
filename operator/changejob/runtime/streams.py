"""One watched collection (a resource type in one namespace, or cluster-wide): its list+watch.

A :class:`Stream` runs the collection's ``watch.ListWatch`` in a thread of its own, keeps what is
known of its sync (has a list completed, what has the running list returned so far) and hands each
object to its :class:`Consumer` — the subscriptions to the collection's objects
(``runtime/subscriptions.py``), which decide what an object means to the CTJs that watch it.
Objects no one wants are dropped here, after their name is read. :meth:`Stream.read` reads named
objects afresh, for subscribers that join after the list.

Locks: the stream's own lock guards only its sync bookkeeping and is never held while the consumer is
called; the consumer may ask the stream (``synced``, ``listed``) while holding its own lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Protocol

from changejob.kube import resources, transport, watch

FETCH_ONE_BY_ONE: Final = 8  # more names than this in one read: one paginated LIST instead of GETs


class Consumer(Protocol):
    """What a stream feeds: whoever holds the subscriptions to the collection's objects."""

    def wants(self, name: str) -> bool:
        """Whether anyone subscribes to object ``name`` (asked without a lock: a stale miss is fixed
        by the consumer's own read of a newcomer)."""

    def names(self) -> list[str]:
        """The names subscribed to now."""

    def update(self, name: str, obj: Mapping[str, Any] | None) -> None:
        """Object ``name`` is now ``obj`` (None: it does not exist)."""

    def synced(self) -> None:
        """A (re)list has been handed over completely."""

    def failed(self, error: transport.ApiError) -> None:
        """The collection cannot be listed or watched (401, 403, 404); retried slowly."""


class Stream:
    """One collection's list+watch (a ``watch.Sink``), feeding one consumer."""

    def __init__(
        self,
        *,
        transport_: transport.Transport,
        rtype: resources.ResourceType,
        namespace: str | None,
        consumer: Consumer,
        watch_timeout: float = 300.0,
        stall_timeout: float = 120.0,
    ) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self._t = transport_
        self._consumer = consumer
        self._lock = threading.Lock()
        self._synced = False
        self._relist: watch.Relist[str] = watch.Relist()
        self.stop = threading.Event()
        self.listwatch = watch.ListWatch(
            transport_=transport_,
            path=rtype.path(namespace),
            sink=self,
            stop=self.stop,
            watch_timeout=watch_timeout,
            stall_timeout=stall_timeout,
            name=f"{rtype.plural}.{rtype.group or 'core'}/{namespace or '*'}",
        )
        self._thread = threading.Thread(target=self.listwatch.run, name=f"watch-{self.listwatch.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def synced(self) -> bool:
        """Whether a list of the collection has completed (it stays True through later relists)."""
        with self._lock:
            return self._synced

    def listed(self, name: str) -> bool:
        """Whether the list running now has already returned object ``name``."""
        with self._lock:
            return self._relist.seen(name)

    # --- watch.Sink -------------------------------------------------------------------------------
    def begin_sync(self) -> None:
        with self._lock:
            self._relist.begin()

    def synced_object(self, obj: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            self._relist.saw(name)
        self._consumer.update(name, obj)

    def end_sync(self) -> None:
        # ``synced`` flips before the subscribed names are read: a subscriber that found the stream
        # not synced (and its object not listed) is then among those names, and learns of its
        # object's absence below; one that found it synced reads its object itself.
        with self._lock:
            self._synced = True
        held = self._consumer.names()
        with self._lock:
            gone = self._relist.end(held)
        for name in gone:
            self._consumer.update(name, None)
        self._consumer.synced()

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if name is None or not self._consumer.wants(name):
            return
        self._consumer.update(name, None if kind == "DELETED" else obj)

    def failed(self, error: transport.ApiError) -> None:
        self._consumer.failed(error)

    # --- one-off reads ----------------------------------------------------------------------------
    def read(self, names: Collection[str], take: Callable[[str, Mapping[str, Any] | None], None]) -> None:
        """Read the objects ``names`` afresh and hand each to ``take`` (None: it does not exist).

        A few are read with one GET each, many (a restart, a shard handover) with one paginated LIST
        of the collection instead of thousands of GETs.
        """
        if len(names) <= FETCH_ONE_BY_ONE:
            for name in names:
                take(name, self._get(name))
            return
        found: set[str] = set()

        def keep(item: Mapping[str, Any]) -> None:
            name = item["metadata"]["name"]
            if name in names:
                found.add(name)
                take(name, item)

        for page in self._t.list_pages(self.rtype.path(self.namespace), span_resource=self.rtype.plural):
            watch.hand_over(page.items, keep)
        for name in names:
            if name not in found:
                take(name, None)

    def _get(self, name: str) -> Mapping[str, Any] | None:
        try:
            obj: Mapping[str, Any] = self._t.request(
                "GET",
                self.rtype.path(self.namespace, name),
                span_resource=self.rtype.plural,
                namespace=self.namespace,
                name=name,
            )
        except transport.ApiError as exc:
            if not exc.not_found:
                raise
            return None
        return obj
