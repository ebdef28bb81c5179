"""A de-duplicating work queue with delayed adds, in the manner of client-go's workqueue.

- A key waiting in the queue is queued once, however often it is added.
- A key being processed is never handed to a second worker; adds meanwhile mark it dirty and it is
  re-queued when the worker is done.
- ``add_after`` keeps the earliest pending deadline per key (cooldown timers, retries).
- ``add_background`` queues a key behind every key added with ``add`` (the periodic resync of every
  CTJ): a watch event's key never waits behind thousands of resync keys, and adding a key already
  waiting in the background moves it to the front line.

The queue reports its own depth (ready, in the background line and delayed) to a gauge when given
one; when a key comes back after a failure is the worker loop's decision (``runtime/controller.py``).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, depth_gauge: Any = None) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._background: deque[K] = deque()
        self._in_background: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: list[tuple[float, int, K]] = []
        self._deadline: dict[K, float] = {}
        self._seq = 0
        self._closed = False
        if depth_gauge is not None:  # read at scrape time: never a count from before a concurrent change
            depth_gauge.set_function(self.__len__)

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._in_background) + len(self._deadline)

    def add(self, key: K) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._in_background.discard(key)  # its stale background entry is skipped by get()
            self._queued.add(key)
            self._queue.append(key)
            self._cond.notify()

    def add_background(self, key: K) -> None:
        """Queue ``key`` behind every ``add``ed key, unless it is queued or being processed already."""
        with self._cond:
            if key in self._processing or key in self._queued or key in self._in_background:
                return
            self._in_background.add(key)
            self._background.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            at = self._clock() + delay
            if self._deadline.get(key, float("inf")) <= at:
                return
            self._deadline[key] = at
            self._seq += 1
            heapq.heappush(self._timers, (at, self._seq, key))
            self._cond.notify()

    def _promote_due_locked(self) -> float | None:
        """Move due timers into the queue; return seconds until the next one (None if none)."""
        now = self._clock()
        while self._timers:
            at, _, key = self._timers[0]
            if self._deadline.get(key) != at:  # superseded by an earlier deadline
                heapq.heappop(self._timers)
                continue
            if at > now:
                return at - now
            heapq.heappop(self._timers)
            del self._deadline[key]
            self._add_locked(key)
        return None

    def get(self, timeout: float | None = None) -> K | None:
        """The next key to process, or None when closed (or on timeout)."""
        end = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                while self._background:
                    key = self._background.popleft()
                    if key in self._in_background:
                        self._in_background.discard(key)
                        self._processing.add(key)
                        return key
                if self._closed:
                    return None
                if end is not None:
                    left = end - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_locked(key)

    def forget(self, key: K) -> None:
        """Drop a pending timer for ``key`` (e.g. the CTJ was deleted)."""
        with self._cond:
            self._deadline.pop(key, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
