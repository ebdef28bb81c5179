"""List+watch of one collection, resilient and economical.

- The initial list is paginated and handed to the sink page by page (``begin_sync`` /
  ``synced_object`` / ``end_sync``), so a namespace with thousands of objects never sits in memory
  at once.
- The watch resumes from the last resourceVersion seen, bookmarks included, so a routine reconnect
  costs one request and replays nothing.
- ``410 Gone`` (history compacted) relists; the sink compares hashes, so a relist never triggers by
  itself.
- A stream that stays silent longer than ``stall_timeout`` (no event, no bookmark) is restarted.
- Errors back off exponentially (capped); a ``403`` is reported to the sink so the CTJs that need the
  collection can say which RBAC rule is missing, and retried slowly.
- A list page is one large buffer (about 1 MB for 500 CTJs): :func:`large_buffers_off_heap` makes
  such buffers go back to the system when freed instead of staying in the heap for good, and each
  page's objects are freed as they are handed over (:func:`hand_over`), before the next page is read.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import random
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from changejob.kube import transport
from changejob.telemetry import metrics

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD: Final = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BUFFER: Final = 128 * 1024
K = TypeVar("K", bound=Hashable)


@functools.cache
def large_buffers_off_heap() -> bool:
    """Have the C allocator map every block of ``LARGE_BUFFER`` bytes or more on its own.

    By default glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, so
    after the first list page every later page, response body and their copies are carved from the
    heap of whichever thread read them; freed, they stay there, spread over per-thread heaps that
    are never handed back. At 10 000 CTJs that held 20 MiB of resident memory after a restart,
    about a sixth of the process. A fixed threshold keeps large buffers mapped, and unmapped when
    freed. Process-wide, idempotent; called once by the manager before any list. False where the C
    library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER))


def hand_over(items: list[Any], take: Callable[[Any], None]) -> None:
    """Give each of a list page's ``items`` to ``take``, emptying the list as it goes.

    The list is the only reference to the page's objects, so each is freed as soon as it is taken:
    the memory of a page goes back while its objects are handled, and the next page is never read
    while the previous one is still held.
    """
    items.reverse()
    while items:
        take(items.pop())


class Relist(Generic[K]):
    """The relist diff: the keys one (re)list saw, and at its end the held keys it did not see.

    A held key the list did not return was deleted while no watch was running; the holder drops it.
    Not thread-safe: the holder guards it with whatever lock guards its keys.
    """

    def __init__(self) -> None:
        self._seen: set[K] = set()

    def begin(self) -> None:
        self._seen = set()

    def saw(self, key: K) -> None:
        self._seen.add(key)

    def seen(self, key: K) -> bool:
        """Whether the list running now has already returned ``key``."""
        return key in self._seen

    def end(self, held: Iterable[K]) -> list[K]:
        """The keys of ``held`` this list did not return; forgets what it saw."""
        seen, self._seen = self._seen, set()
        return [key for key in held if key not in seen]


class Sink(Protocol):
    """Receives the contents of one collection."""

    def begin_sync(self) -> None: ...

    def synced_object(self, obj: Mapping[str, Any]) -> None: ...

    def end_sync(self) -> None: ...

    def event(self, kind: str, obj: Mapping[str, Any]) -> None: ...

    def failed(self, error: transport.ApiError) -> None: ...


class ListWatch:
    """Keeps a sink in step with one collection until ``stop`` is set."""

    def __init__(
        self,
        *,
        transport_: transport.Transport,
        path: str,
        sink: Sink,
        stop: threading.Event,
        label_selector: str | None = None,
        watch_timeout: float = 300.0,
        stall_timeout: float = 120.0,
        page_size: int = 500,
        max_backoff: float = 60.0,
        name: str | None = None,
    ) -> None:
        self._t = transport_
        self.path = path
        self._sink = sink
        self._stop = stop
        self._selector = label_selector
        self._watch_timeout = watch_timeout
        self._stall_timeout = stall_timeout
        self._page_size = page_size
        self._max_backoff = max_backoff
        self._backoff = 0.5
        self.name = name or path
        self.resource_version: str | None = None
        self.synced = threading.Event()

    def run(self) -> None:
        """The loop: list, then watch and re-watch, relisting only when history is gone."""
        self._backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
            except transport.ApiError as exc:
                if exc.gone:
                    metrics.watch_restarts_total.labels(reason="gone").inc()
                    log.info("watch history expired, relisting", extra={"watch": self.name})
                    self.resource_version = None
                    continue
                if exc.reason == "Timeout":
                    metrics.watch_stalls_total.inc()
                    self._t.drop_idle_connections()  # pooled ones may be as dead as this one
                    metrics.watch_restarts_total.labels(reason="stalled").inc()
                    log.warning("watch stalled, restarting", extra={"watch": self.name})
                    continue
                if exc.status in (401, 403, 404):
                    self._sink.failed(exc)
                    delay = self._max_backoff
                else:
                    metrics.watch_restarts_total.labels(reason="error").inc()
                    delay = self._backoff
                    self._backoff = min(self._backoff * 2, self._max_backoff)
                log.warning("watch failed: %s; retrying in %.1fs", exc, delay, extra={"watch": self.name})
                self._stop.wait(delay * random.uniform(0.8, 1.2))
            except Exception:  # keep the stream alive whatever a sink does
                log.exception("watch loop error", extra={"watch": self.name})
                self._stop.wait(self._backoff)
                self._backoff = min(self._backoff * 2, self._max_backoff)

    def _list(self) -> None:
        self._sink.begin_sync()
        pages = self._t.list_pages(
            self.path, query={"labelSelector": self._selector}, page_size=self._page_size, span_resource="list"
        )
        for page in pages:
            hand_over(page.items, self._sink.synced_object)
            if page.last:
                self.resource_version = page.resource_version
            elif self._stop.is_set():
                return
        self._sink.end_sync()
        self.synced.set()
        self._backoff = 0.5

    def _watch(self) -> None:
        # The server ends a healthy watch before the stall bound: bookmarks only come when the type
        # (or etcd progress) moves, so an idle but healthy stream may be silent; ending it cleanly
        # first means a read that outlasts the stall bound really is a dead connection.
        longest = max(5.0, min(self._watch_timeout, self._stall_timeout - 15.0))
        timeout = int(longest * random.uniform(0.85, 1.0))
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": timeout,
            "labelSelector": self._selector,
        }
        read_timeout = min(self._stall_timeout, timeout + 30.0)
        for line in self._t.stream(self.path, query=query, read_timeout=read_timeout):
            self._backoff = 0.5  # the stream answers: the next failure starts from a short delay again
            if self._stop.is_set():
                return
            kind = line.get("type")
            obj = line.get("object") or {}
            if kind == "ERROR":
                raise transport.ApiError(
                    int(obj.get("code") or 500), str(obj.get("reason") or "Error"), str(obj.get("message") or ""), obj
                )
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            metrics.watch_events_total.labels(type=str(kind)).inc()
            if kind != "BOOKMARK":
                self._sink.event(str(kind), obj)
