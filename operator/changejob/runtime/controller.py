"""The worker loop: take a key, reconcile it, decide when it comes back. The only requeue policy.

As in controller-runtime, a reconcile returns a :class:`Result` or raises, and only this loop puts a
key back on the queue:

- ``Result(requeue_after=s)``: again in ``s`` seconds (a cooldown's end, a kind not installed yet);
- a status-write conflict (someone else wrote the CTJ; the reconciler has re-read it): again soon,
  ``conflict_backoff`` (5 ms doubling, at most 1 s);
- :class:`writes.Fenced` (this replica may no longer act for the CTJ): nothing was written; it is
  looked at again after the error backoff, by which time it has usually been handed over;
- any other exception: logged, counted in ``changejob_reconcile_errors_total``, again after
  ``error_backoff`` (0.5 s doubling, at most 60 s, the default resync period);
- success resets both backoffs of the key.

A watch event for the key (``WorkQueue.add``) does not wait for a backoff: the change is new work.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from changejob.kube import transport, writes
from changejob.runtime import queue
from changejob.telemetry import metrics

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """How a reconcile ended well: ``requeue_after`` seconds until it should run again (None: only
    when something changes)."""

    requeue_after: float | None = None


class Backoff(Generic[K]):
    """Per-key exponential delay: ``base * 2**(n-1)`` after the n-th consecutive failure, at most ``cap``."""

    def __init__(self, *, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._failures: dict[K, int] = {}

    def next(self, key: K) -> float:
        """Count a failure of ``key``; the delay before its next attempt."""
        with self._lock:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        return float(min(self.cap, self.base * 2.0 ** (failures - 1)))

    def failures(self, key: K) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        with self._lock:
            self._failures.pop(key, None)


def _name(key: Hashable) -> str:
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


class Controller(Generic[K]):
    """Workers that take keys from ``work`` and ``reconcile`` them (see the module docstring)."""

    def __init__(
        self,
        *,
        work: queue.WorkQueue[K],
        reconcile: Callable[[K], Result],
        error_backoff: Backoff[K] | None = None,
        conflict_backoff: Backoff[K] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = work
        self._reconcile = reconcile
        self.errors: Backoff[K] = error_backoff or Backoff(base=0.5, cap=60.0)
        self.conflicts: Backoff[K] = conflict_backoff or Backoff(base=0.005, cap=1.0)
        self._clock = clock
        self.last_loop = clock()

    def run(self, stop: threading.Event) -> None:
        """One worker: until ``stop`` is set or the queue is closed."""
        while not stop.is_set():
            self.last_loop = self._clock()
            self.process_one(timeout=5.0)

    def process_one(self, timeout: float | None = None) -> bool:
        """Take one key (waiting up to ``timeout``) and handle it; False if there was none."""
        key = self._queue.get(timeout=timeout)
        if key is None:
            return False
        started = time.perf_counter()
        try:
            self._handle(key)
        finally:
            self._queue.done(key)
            metrics.reconcile_duration_seconds.observe(time.perf_counter() - started)
        return True

    def _handle(self, key: K) -> None:
        try:
            result = self._reconcile(key)
        except writes.Fenced as exc:
            log.info("not acting: %s", exc, extra={"ctj": _name(key)})
            self._queue.add_after(key, self.errors.next(key))
        except transport.ApiError as exc:
            if exc.conflict:
                self._queue.add_after(key, self.conflicts.next(key))
            else:
                self._failed(key)
        except Exception:
            self._failed(key)
        else:
            self.errors.forget(key)
            self.conflicts.forget(key)
            if result.requeue_after is not None:
                self._queue.add_after(key, result.requeue_after)

    def _failed(self, key: K) -> None:
        metrics.reconcile_errors_total.inc()
        delay = self.errors.next(key)
        log.exception("reconcile failed; retrying in %.2fs", delay, extra={"ctj": _name(key)})
        self._queue.add_after(key, delay)

    def forget(self, key: K) -> None:
        """``key`` is gone (deleted, or no longer owned): no timer, no backoff left for it."""
        self._queue.forget(key)
        self.errors.forget(key)
        self.conflicts.forget(key)
