"""Tracing: configured only by the environment, real SDK spans, links and traceparent propagation."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http import server as http_server

import pytest
from kubernetes.client import exceptions as kube_exceptions
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export import in_memory_span_exporter

from changejob.telemetry import tracing

pytestmark = pytest.mark.unit

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* setting leaks in from the machine, and tracing is off again after each test."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    tracing.shutdown()
    yield
    tracing.shutdown()


@pytest.fixture
def spans() -> in_memory_span_exporter.InMemorySpanExporter:
    """Tracing on, exporting into memory."""
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    assert tracing.setup(exporter=exporter)
    return exporter


def finished(exporter: in_memory_span_exporter.InMemorySpanExporter) -> dict[str, object]:
    """The exported spans by name, after flushing the batch processor."""
    assert tracing.force_flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def test_nothing_configured_means_off() -> None:
    assert tracing.setup() is False
    assert isinstance(tracing.tracer(), trace.NoOpTracer)
    with tracing.tracer().start_as_current_span("watch.event") as span:
        assert not span.is_recording()
        assert tracing.traceparent() is None
    with tracing.api_call(method="GET", resource="configmaps", namespace="ns", name="a") as call:
        assert not call.is_recording()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_environment_decides_whether_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracing.setup() is expected
    assert isinstance(tracing.tracer(), trace.NoOpTracer) is not expected
    # no span here: an OTLP exporter would try to deliver it to a collector that is not running


def test_console_exporter_prints_recorded_spans(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracing.setup()
    with tracing.tracer().start_as_current_span("watch.event") as span:
        assert span.is_recording()
    tracing.shutdown()
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "watch.event"
    assert printed["resource"]["attributes"]["service.name"] == "kube-changejob"


def test_sdk_disabled_wins_over_an_explicit_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    assert tracing.setup(exporter=in_memory_span_exporter.InMemorySpanExporter()) is False


def test_spans_have_scope_and_default_service_name(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    with tracing.tracer().start_as_current_span("ctj.decide"):
        pass
    span = finished(spans)["ctj.decide"]
    assert span.instrumentation_scope.name == "changejob"  # type: ignore[attr-defined]
    assert span.resource.attributes["service.name"] == "kube-changejob"  # type: ignore[attr-defined]


def test_service_name_and_resource_attributes_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "changejob-staging")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,k8s.pod.name=p-1")
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    assert tracing.setup(service_name="ignored", exporter=exporter)
    with tracing.tracer().start_as_current_span("x"):
        pass
    attributes = finished(exporter)["x"].resource.attributes  # type: ignore[attr-defined]
    assert attributes["service.name"] == "changejob-staging"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["k8s.pod.name"] == "p-1"


def test_sampler_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    assert tracing.setup(exporter=exporter)
    with tracing.tracer().start_as_current_span("x") as span:
        assert not span.is_recording()
        assert tracing.traceparent() is None
    assert finished(exporter) == {}


def test_traceparent_names_the_current_span(spans: in_memory_span_exporter.InMemorySpanExporter) -> None:
    assert tracing.traceparent() is None
    with tracing.tracer().start_as_current_span("job.create") as span:
        value = tracing.traceparent()
        context = span.get_span_context()
    assert value is not None
    match = TRACEPARENT.match(value)
    assert match is not None
    assert match.group(1) == trace.format_trace_id(context.trace_id)
    assert match.group(2) == trace.format_span_id(context.span_id)
    assert int(match.group(3), 16) & 0x01, "the sampled flag is set"
    assert tracing.traceparent() is None


def test_api_call_is_a_client_span_with_kubernetes_attributes(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    with tracing.tracer().start_as_current_span("ctj.status") as parent:
        with tracing.api_call(
            method="PATCH", resource="changetriggeredjobs/status", namespace="team-a", name="nightly"
        ) as call:
            assert call.is_recording()
        parent_id = parent.get_span_context().span_id
    span = finished(spans)["PATCH changetriggeredjobs/status"]
    assert span.kind is trace.SpanKind.CLIENT  # type: ignore[attr-defined]
    assert span.parent.span_id == parent_id  # type: ignore[attr-defined]
    assert dict(span.attributes) == {  # type: ignore[attr-defined]
        "http.request.method": "PATCH",
        "k8s.resource": "changetriggeredjobs/status",
        "k8s.namespace.name": "team-a",
        "k8s.object.name": "nightly",
    }
    assert span.status.status_code is trace.StatusCode.UNSET  # type: ignore[attr-defined]


def test_api_call_without_namespace_or_name(spans: in_memory_span_exporter.InMemorySpanExporter) -> None:
    with tracing.api_call(method="GET", resource="namespaces", namespace=None, name=None):
        pass
    attributes = dict(finished(spans)["GET namespaces"].attributes)  # type: ignore[attr-defined]
    assert attributes == {"http.request.method": "GET", "k8s.resource": "namespaces"}


def test_api_call_failure_records_status_code_and_reraises(
    spans: in_memory_span_exporter.InMemorySpanExporter,
) -> None:
    error = kube_exceptions.ApiException(status=409, reason="Conflict")
    with (
        pytest.raises(kube_exceptions.ApiException) as raised,
        tracing.api_call(method="POST", resource="jobs", namespace="team-a", name="nightly-abc"),
    ):
        raise error
    assert raised.value is error
    span = finished(spans)["POST jobs"]
    assert span.attributes["http.response.status_code"] == 409  # type: ignore[attr-defined]
    assert span.attributes["error.type"] == "409"  # type: ignore[attr-defined]
    assert span.status.status_code is trace.StatusCode.ERROR  # type: ignore[attr-defined]
    events = [event.name for event in span.events]  # type: ignore[attr-defined]
    assert events == ["exception"]


def test_api_call_failure_without_status(spans: in_memory_span_exporter.InMemorySpanExporter) -> None:
    with (
        pytest.raises(ConnectionResetError),
        tracing.api_call(method="GET", resource="jobs", namespace="ns", name=None),
    ):
        raise ConnectionResetError("reset by peer")
    span = finished(spans)["GET jobs"]
    assert "http.response.status_code" not in span.attributes  # type: ignore[attr-defined]
    assert span.attributes["error.type"] == "ConnectionResetError"  # type: ignore[attr-defined]
    assert span.status.status_code is trace.StatusCode.ERROR  # type: ignore[attr-defined]


def test_shutdown_flushes_and_turns_tracing_off() -> None:
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    assert tracing.setup(exporter=exporter)
    with tracing.tracer().start_as_current_span("last"):
        pass
    tracing.shutdown()
    assert [span.name for span in exporter.get_finished_spans()] == ["last"]
    assert isinstance(tracing.tracer(), trace.NoOpTracer)
    with tracing.tracer().start_as_current_span("after") as span:
        assert not span.is_recording()


class _Collector(http_server.ThreadingHTTPServer):
    """A minimal OTLP/HTTP receiver: keeps every request's path and decoded body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, trace_service_pb2.ExportTraceServiceRequest]] = []
        super().__init__(("127.0.0.1", 0), _CollectorHandler)


class _CollectorHandler(http_server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        assert isinstance(self.server, _Collector)
        self.server.requests.append((self.path, request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_endpoint_from_the_environment_receives_the_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = _Collector()
    thread = threading.Thread(target=collector.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
        assert tracing.setup(service_name="changejob-test")
        with tracing.api_call(method="POST", resource="jobs", namespace="ns", name="j"):
            pass
        tracing.shutdown()
    finally:
        collector.shutdown()
        collector.server_close()
        thread.join()
    assert [path for path, _ in collector.requests] == ["/v1/traces"]
    (resource_spans,) = collector.requests[0][1].resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "changejob-test"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "changejob"
    assert [span.name for span in scope_spans.spans] == ["POST jobs"]
