"""Reads and writes of single objects: Jobs, CTJ status, Events, the hash-key Secret.

Every write is idempotent by construction (deterministic Job names, optimistic concurrency on status),
so a retry — by tenacity here, or by another replica — never duplicates anything.

Every write of a CTJ's Job, status or Events goes through :meth:`Writer._write` with a ``fence``: asked
right before the request is sent, it says whether this replica may still act for that CTJ (its shard
is still held and freshly renewed); when it says no, nothing is sent and :class:`Fenced` is raised.
The fence is asked once per write, before the first attempt; asking it before every attempt of
``retry_transient`` too is one line: ``check(fence, ...)`` at the top of ``_send``, which is handed
the fence for that reason.
"""

from __future__ import annotations

import base64
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import tenacity
from opentelemetry import context as otel_context

from changejob.domain import bodies
from changejob.kube import resources, transport

log = logging.getLogger(__name__)

HASH_KEY_SECRET = "kube-changejob-hash-key"
EVENT_BACKLOG = 10_000
EVENT_SENDERS = 4

Fence = Callable[[], bool]
"""Asked right before a write is sent: False when this replica may no longer act for the object."""


def unfenced() -> bool:
    """The fence of writes that belong to no CTJ (the installation's hash key)."""
    return True


class Fenced(Exception):  # noqa: N818  (a refusal, not an error of the server)
    """A write was not sent: its fence said this replica may no longer act for the object."""


def check(fence: Fence, what: str) -> None:
    """Raise :class:`Fenced` unless ``fence`` allows the write ``what``."""
    if not fence():
        raise Fenced(f"{what}: this replica may no longer act for the object")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, transport.ApiError) and (exc.status in {0, 429} or exc.status >= 500)


# Retries for API errors that are worth retrying at once (network, 429, 5xx); conflicts are handled
# by the callers, which must re-read before writing again.
retry_transient = tenacity.retry(
    retry=tenacity.retry_if_exception(_transient),
    wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
    stop=tenacity.stop_after_attempt(5),
    before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
    reraise=True,
)


class Writer:
    """The operator's single-object API calls."""

    def __init__(self, t: transport.Transport, *, component: str = "kube-changejob", instance: str = "") -> None:
        self._t = t
        self._component = component
        self._instance = instance
        self._event_lock = threading.Lock()
        self._event_seq = 0
        self._events: queue.Queue[tuple[dict[str, Any], str, str, str, datetime, otel_context.Context]] = queue.Queue(
            EVENT_BACKLOG
        )
        self._event_threads: list[threading.Thread] = []

    @retry_transient
    def get(self, path: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._t.request("GET", path, span_resource=path.rsplit("/", 2)[-2])
        except transport.ApiError as exc:
            if exc.not_found:
                return None
            raise
        return obj

    def create_job(self, job: bodies.Job, *, fence: Fence) -> bodies.Job:
        meta = job["metadata"]
        created: bodies.Job = self._write(
            "POST",
            resources.JOB.path(meta["namespace"]),
            fence=fence,
            body=job,
            span_resource="jobs",
            namespace=meta["namespace"],
            name=meta["name"],
        )
        return created

    def delete_job(self, *, namespace: str, name: str, fence: Fence) -> None:
        try:
            self._write(
                "DELETE",
                resources.JOB.path(namespace, name),
                fence=fence,
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                span_resource="jobs",
                namespace=namespace,
                name=name,
            )
        except transport.ApiError as exc:
            if not exc.not_found:
                raise

    def update_status(self, ctj: bodies.Ctj, *, fence: Fence) -> bodies.Ctj:
        """PUT the status subresource; the object's resourceVersion makes it a compare-and-swap."""
        meta = ctj["metadata"]
        written: bodies.Ctj = self._write(
            "PUT",
            resources.CTJ.path(meta["namespace"], meta["name"], subresource="status"),
            fence=fence,
            body=ctj,
            span_resource="changetriggeredjobs/status",
            namespace=meta["namespace"],
            name=meta["name"],
        )
        return written

    def _write(self, method: str, path: str, *, fence: Fence, **options: Any) -> Any:
        """The one path of every write: ``fence`` is asked right before the request is sent."""
        check(fence, f"{method} {path}")
        return self._send(method, path, fence=fence, **options)

    @retry_transient
    def _send(self, method: str, path: str, *, fence: Fence, **options: Any) -> Any:
        """One attempt; ``retry_transient`` repeats it. ``fence`` was asked before the first one."""
        del fence
        return self._t.request(method, path, **options)

    def event(self, meta: bodies.ObjectMeta, *, type_: str, reason: str, message: str, fence: Fence) -> None:
        """Record a core/v1 Event on the CTJ of ``meta``, asynchronously (as client-go's recorder does).

        Events are best effort and off the critical path: a trigger's Job and status are written
        without waiting for them. When more than ``EVENT_BACKLOG`` are waiting, new ones are dropped
        (and counted in the log) rather than slowing the operator down. The fence is asked now.
        """
        check(fence, f"event {reason} of {meta.get('namespace')}/{meta.get('name')}")
        item = (
            {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
            type_,
            reason,
            message,
            datetime.now(UTC),
            otel_context.get_current(),  # so the POST joins the trace of whatever caused the Event
        )
        with self._event_lock:
            if not self._event_threads:  # a few senders: a burst of baselines is thousands of Events
                for i in range(EVENT_SENDERS):
                    thread = threading.Thread(target=self._send_events, name=f"events-{i}", daemon=True)
                    thread.start()
                    self._event_threads.append(thread)
        try:
            self._events.put_nowait(item)
        except queue.Full:
            log.warning(
                "event backlog full; dropped %s event", reason, extra={"ctj": f"{meta['namespace']}/{meta['name']}"}
            )

    def flush_events(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until queued Events are sent: used on shutdown."""
        deadline = time.monotonic() + timeout
        while self._events.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _send_events(self) -> None:
        while True:
            meta, type_, reason, message, now, ctx = self._events.get()
            token = otel_context.attach(ctx)
            try:
                self._post_event(meta, type_=type_, reason=reason, message=message, now=now)
            finally:
                otel_context.detach(token)
                self._events.task_done()

    def _post_event(self, meta: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime) -> None:
        with self._event_lock:
            self._event_seq += 1
            seq = self._event_seq
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}{seq:x}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": resources.CTJ.api_version,
                "kind": resources.CTJ.kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": stamp,
            "count": 1,
            "action": reason,
            "reportingComponent": self._component,
            "reportingInstance": self._instance or self._component,
            "source": {"component": self._component},
        }
        try:
            self._t.request(
                "POST",
                resources.EVENT.path(meta["namespace"]),
                body=body,
                span_resource="events",
                namespace=meta["namespace"],
            )
        except transport.ApiError as exc:
            log.warning(
                "could not record event %s: %s", reason, exc, extra={"ctj": f"{meta['namespace']}/{meta['name']}"}
            )

    def hash_key(self, *, namespace: str) -> bytes:
        """The per-installation key for Secret hashes; created (race-safely) when missing."""
        for _ in range(3):
            found = self.get(resources.SECRET.path(namespace, HASH_KEY_SECRET))
            if found is not None:
                return base64.b64decode(found["data"]["key"])
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": HASH_KEY_SECRET,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/name": "kube-changejob"},
                },
                "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
            }
            try:
                self._write(
                    "POST",
                    resources.SECRET.path(namespace),
                    fence=unfenced,
                    body=body,
                    span_resource="secrets",
                    namespace=namespace,
                )
            except transport.ApiError as exc:
                if not exc.already_exists:
                    raise
        raise RuntimeError(f"could not read or create secret {namespace}/{HASH_KEY_SECRET}")
