"""Metrics: the documented names are exposed, on a registry of their own, in both exposition formats."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import parser

from changejob.telemetry import metrics

pytestmark = pytest.mark.unit

# The documented metric families (docs/observability.md), written out rather than derived.
DOCUMENTED = {
    "changejob_triggers": "counter",
    "changejob_jobs_created": "counter",
    "changejob_jobs_pruned": "counter",
    "changejob_change_to_job_seconds": "histogram",
    "changejob_watch_restarts": "counter",
    "changejob_watch_stalls": "counter",
    "changejob_watch_events": "counter",
    "changejob_watch_streams": "gauge",
    "changejob_fetch_errors": "counter",
    "changejob_watched_objects": "gauge",
    "changejob_reconcile_duration_seconds": "histogram",
    "changejob_reconcile_errors": "counter",
    "changejob_workqueue_depth": "gauge",
    "changejob_ctjs": "gauge",
    "changejob_owned_shards": "gauge",
    "changejob_leader": "gauge",
    "changejob_lease_writes": "counter",
    "changejob_api_requests": "counter",
    "changejob_api_errors": "counter",
    "changejob_status_writes": "counter",
    "changejob_build_info": "gauge",
}


def families() -> dict[str, str]:
    """Family name -> type, parsed from the classic text exposition."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {family.name: family.type for family in parser.text_string_to_metric_families(body.decode())}


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 if it does not exist yet)."""
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_every_documented_metric_is_exposed_with_its_type() -> None:
    exposed = families()
    changejob = {name: kind for name, kind in exposed.items() if name.startswith("changejob_")}
    assert changejob == DOCUMENTED


def test_process_and_platform_collectors_are_registered() -> None:
    exposed = families()
    assert "python_info" in exposed
    assert "python_gc_objects_collected" in exposed
    assert "process_resident_memory_bytes" in exposed


def test_the_global_registry_is_not_used() -> None:
    global_names = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not {name for name in global_names if name.startswith("changejob_")}


def test_known_label_values_exist_from_the_start() -> None:
    body = metrics.render()[0].decode()
    for result in ("created", "deferred", "coalesced", "skipped"):
        assert f'changejob_triggers_total{{result="{result}"}}' in body
    for event_type in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"):
        assert f'changejob_watch_events_total{{type="{event_type}"}}' in body


def test_counters_gauges_and_histograms_are_rendered_with_their_values() -> None:
    before = sample("changejob_triggers_total", result="coalesced")
    metrics.triggers_total.labels(result="coalesced").inc(3)
    metrics.api_errors_total.labels(code="409").inc()
    metrics.watch_streams.set(17)
    metrics.change_to_job_seconds.observe(0.2)
    assert sample("changejob_triggers_total", result="coalesced") == before + 3
    body = metrics.render()[0].decode()
    assert f'changejob_triggers_total{{result="coalesced"}} {before + 3}' in body
    assert 'changejob_api_errors_total{code="409"}' in body
    assert "changejob_watch_streams 17.0" in body
    assert 'changejob_change_to_job_seconds_bucket{le="0.25"}' in body


def test_change_to_job_buckets_span_5ms_to_60s() -> None:
    body = metrics.render()[0].decode()
    buckets = [
        line.split('le="')[1].split('"')[0]
        for line in body.splitlines()
        if line.startswith("changejob_change_to_job_seconds_bucket")
    ]
    assert buckets[0] == "0.005"
    assert buckets[-2:] == ["60.0", "+Inf"]


def test_no_created_timestamp_series() -> None:
    body = metrics.render()[0].decode()
    assert "changejob_triggers_created" not in body
    assert "changejob_reconcile_duration_seconds_created" not in body


def test_openmetrics_is_served_when_asked_and_carries_exemplars() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metrics.change_to_job_seconds.observe(0.003, exemplar={"trace_id": trace_id})
    body, content_type = metrics.render(accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert 'changejob_change_to_job_seconds_bucket{le="0.005"}' in text
    assert f'# {{trace_id="{trace_id}"}} 0.003' in text
