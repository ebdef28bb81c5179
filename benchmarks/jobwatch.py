"""The benchmark's view of Jobs appearing: one watch on the namespace's Jobs, timestamps on arrival.

Latency is measured on the benchmark's own clock, from the PATCH response to the moment the Job's
ADDED event reaches this watch, for the operator's Jobs (label ``changejob.dev/owner``) and the
baseline client's (label ``bench.changejob.dev/limit-owner``) alike.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from changejob.domain import jobs
from changejob.kube import transport
from limit_client import LIMIT_OWNER_LABEL


class JobWatch:
    def __init__(self, *, t: transport.Transport, namespace: str, resource_version: str) -> None:
        self._t = t
        self._path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self._rv = resource_version
        self._cond = threading.Condition()
        self.seen: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)  # owner -> (t, job)
        self.names: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            query = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": self._rv, "timeoutSeconds": 600}
            try:
                for event in self._t.stream(self._path, query=query, read_timeout=700):
                    self._on(event)
                    if self._stop.is_set():
                        return
            except transport.ApiError as exc:
                self.errors.append(str(exc))
                time.sleep(0.2)

    def _on(self, event: Any) -> None:
        now = time.monotonic()
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        self._rv = meta.get("resourceVersion") or self._rv
        if event.get("type") != "ADDED":
            return
        labels = meta.get("labels") or {}
        owner = labels.get(jobs.OWNER_LABEL) or (
            "limit:" + labels[LIMIT_OWNER_LABEL] if LIMIT_OWNER_LABEL in labels else None
        )
        if owner is None:
            return
        with self._cond:
            self.seen[owner].append((now, meta.get("name", "")))
            self.names[meta.get("name", "")] += 1
            self._cond.notify_all()

    def count(self, owner: str) -> int:
        with self._cond:
            return len(self.seen.get(owner, ()))

    def wait_for(self, owner: str, *, after_count: int, timeout: float) -> float | None:
        """Monotonic arrival time of ``owner``'s Job number ``after_count + 1``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.seen.get(owner, ())) <= after_count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.seen[owner][after_count][0]

    def wait_all(self, owners: dict[str, int], *, timeout: float) -> float | None:
        """Monotonic time the last of ``owners`` (owner -> count before) got a new Job; None on timeout."""
        latest = 0.0
        deadline = time.monotonic() + timeout
        for owner, before in owners.items():
            arrived = self.wait_for(owner, after_count=before, timeout=deadline - time.monotonic())
            if arrived is None:
                return None
            latest = max(latest, arrived)
        return latest
