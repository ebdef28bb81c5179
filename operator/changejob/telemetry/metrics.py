"""Prometheus metrics of the operator, on a registry of their own.

Every metric is a module-level object named like the metric without its ``changejob_`` prefix
(``metrics.triggers_total.labels(result="created").inc()``). Labels are low-cardinality by design:
no CTJ, namespace or object names (those belong in logs and traces). The registry is dedicated, not
``prometheus_client.REGISTRY``, so nothing an imported library registers leaks into ``/metrics``; the
process, platform and GC collectors are registered on it explicitly.
"""

from __future__ import annotations

import platform
from importlib import metadata

import prometheus_client
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, exposition
from prometheus_client.core import CollectorRegistry
from prometheus_client.metrics import Counter, Gauge, Histogram

PREFIX = "changejob"

TRIGGER_RESULTS = ("created", "deferred", "coalesced", "skipped")
"""``triggers_total{result}``: a Job was created; the cooldown deferred the trigger; the change
joined a trigger already pending; no new Job was needed (an earlier attempt had created it)."""

WATCH_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
"""``watch_events_total{type}``: the watch event types of the Kubernetes API."""

WRITE_RESULTS = ("ok", "conflict", "error")
"""``lease_writes_total{result}`` and ``status_writes_total{result}``: written; lost an optimistic
concurrency race (HTTP 409); failed otherwise."""

# ``*_created`` timestamp series double the series count and nothing here reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# -- the build ---------------------------------------------------------------------------------------
build_info = Gauge(
    f"{PREFIX}_build_info",
    "Always 1; its labels name the running build: version (the package version), python_version, "
    "python_implementation.",
    ["version", "python_version", "python_implementation"],
    registry=REGISTRY,
)


def _package_version() -> str:
    """The installed distribution's version (the same source as ``changejob.__version__``)."""
    try:
        return metadata.version("kube-changejob")
    except metadata.PackageNotFoundError:
        return "0+unknown"


build_info.labels(
    version=_package_version(),
    python_version=platform.python_version(),
    python_implementation=platform.python_implementation(),
).set(1)

# -- triggers and Jobs -------------------------------------------------------------------------------
triggers_total = Counter(
    f"{PREFIX}_triggers_total",
    "Trigger decisions taken for CTJs owned by this replica, by result.",
    ["result"],
    registry=REGISTRY,
)
jobs_created_total = Counter(
    f"{PREFIX}_jobs_created_total",
    "Jobs created (an AlreadyExists answer for the deterministic name counts once).",
    registry=REGISTRY,
)
jobs_pruned_total = Counter(
    f"{PREFIX}_jobs_pruned_total",
    "Finished Jobs deleted to respect a CTJ's history limit.",
    registry=REGISTRY,
)
change_to_job_seconds = Histogram(
    f"{PREFIX}_change_to_job_seconds",
    "Time from receiving the watch event of a change to the Job for it being created "
    "(a deferred trigger includes its cooldown).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)

# -- watches -----------------------------------------------------------------------------------------
watch_restarts_total = Counter(
    f"{PREFIX}_watch_restarts_total",
    "Watch streams restarted, by reason: gone (history expired, relisted), error, stalled.",
    ["reason"],
    registry=REGISTRY,
)
watch_stalls_total = Counter(
    f"{PREFIX}_watch_stalls_total",
    "Watch streams that received nothing (not even a bookmark) for longer than the stall timeout.",
    registry=REGISTRY,
)
watch_events_total = Counter(
    f"{PREFIX}_watch_events_total",
    "Watch events received, by event type.",
    ["type"],
    registry=REGISTRY,
)
watch_streams = Gauge(
    f"{PREFIX}_watch_streams",
    "Open watch streams (one per watched resource type and namespace).",
    registry=REGISTRY,
)
fetch_errors_total = Counter(
    f"{PREFIX}_fetch_errors_total",
    "Failed reads of newly watched objects (joined after their stream's list); retried with backoff.",
    registry=REGISTRY,
)
watched_objects = Gauge(
    f"{PREFIX}_watched_objects",
    "Objects whose selected-field hashes are held in memory.",
    registry=REGISTRY,
)

# -- reconciling -------------------------------------------------------------------------------------
reconcile_duration_seconds = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Time to reconcile one CTJ key taken from the work queue, writes included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
reconcile_errors_total = Counter(
    f"{PREFIX}_reconcile_errors_total",
    "Reconciles that failed and were re-queued with backoff.",
    registry=REGISTRY,
)
workqueue_depth = Gauge(
    f"{PREFIX}_workqueue_depth",
    "CTJ keys waiting in the work queue (ready now or delayed).",
    registry=REGISTRY,
)

# -- ownership ---------------------------------------------------------------------------------------
ctjs = Gauge(
    f"{PREFIX}_ctjs",
    "CTJs owned by this replica.",
    registry=REGISTRY,
)
owned_shards = Gauge(
    f"{PREFIX}_owned_shards",
    "Shards whose Lease this replica holds.",
    registry=REGISTRY,
)
leader = Gauge(
    f"{PREFIX}_leader",
    "1 while this replica owns at least one shard, else 0.",
    registry=REGISTRY,
)
lease_writes_total = Counter(
    f"{PREFIX}_lease_writes_total",
    "Lease create/renew/release writes, by result.",
    ["result"],
    registry=REGISTRY,
)

# -- API access --------------------------------------------------------------------------------------
api_requests_total = Counter(
    f"{PREFIX}_api_requests_total",
    "API server requests, by verb (as the API server names them: list, get, watch, create, update, "
    "patch, delete) and resource (the path's resource, with its subresource: 'changetriggeredjobs/status').",
    ["verb", "resource"],
    registry=REGISTRY,
)
api_errors_total = Counter(
    f"{PREFIX}_api_errors_total",
    "Failed API server requests, by HTTP status code ('0' when no response was received).",
    ["code"],
    registry=REGISTRY,
)
status_writes_total = Counter(
    f"{PREFIX}_status_writes_total",
    "CTJ status writes, by result.",
    ["result"],
    registry=REGISTRY,
)


def _initialise_series() -> None:
    """Create the known label combinations at zero, so ``rate()`` and alerts see them from the start."""
    for result in TRIGGER_RESULTS:
        triggers_total.labels(result=result)
    for event_type in WATCH_EVENT_TYPES:
        watch_events_total.labels(type=event_type)
    for result in WRITE_RESULTS:
        lease_writes_total.labels(result=result)
        status_writes_total.labels(result=result)


_initialise_series()


def render(*, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of every metric and its content type.

    ``accept`` is the scraper's Accept header: Prometheus asking for OpenMetrics gets OpenMetrics
    (which carries exemplars); anything else gets the classic text format.
    """
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
