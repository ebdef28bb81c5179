"""OpenTelemetry tracing for the operator, configured from the standard ``OTEL_*`` environment.

Tracing is off unless the environment asks for it: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, or ``OTEL_TRACES_EXPORTER`` naming ``otlp`` and/or
``console``. ``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` keep it off. The SDK itself
reads the rest (sampler, resource attributes, service name, exporter headers/timeouts, batch sizes).

When tracing is off, ``tracer()`` is the API's no-op tracer and ``api_call`` returns a shared null
context, so instrumented code costs a function call and nothing more.

The provider is owned by this module and is not installed as the global API provider: the operator
uses no auto-instrumentation, every span comes from ``tracer()``, and a module-owned provider can be
set up and shut down repeatedly (which the global one, set-once by design, cannot).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import metadata

from opentelemetry import trace
from opentelemetry.sdk import resources
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import export
from opentelemetry.trace.propagation import tracecontext

SCOPE = "changejob"
"""Instrumentation scope name of every span the operator makes."""

_log = logging.getLogger(__name__)
_PROPAGATOR = tracecontext.TraceContextTextMapPropagator()
_NOOP_TRACER = trace.NoOpTracer()
_OFF: AbstractContextManager[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)
_KNOWN_EXPORTERS = frozenset({"otlp", "console"})


@dataclass
class _State:
    """What ``setup`` configured; ``provider is None`` means tracing is off."""

    provider: sdk_trace.TracerProvider | None = None
    tracer: trace.Tracer = _NOOP_TRACER


_state = _State()


def setup(*, service_name: str = "kube-changejob", exporter: export.SpanExporter | None = None) -> bool:
    """Configure tracing if the environment (or an explicit ``exporter``) asks for it.

    Returns True when spans will be recorded and exported. ``service_name`` is used only when neither
    ``OTEL_SERVICE_NAME`` nor ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` is set. An explicit
    ``exporter`` (for embedding and tests) replaces the environment's choice of exporters but
    ``OTEL_SDK_DISABLED`` still wins. Calling ``setup`` again first shuts down the previous provider.
    """
    shutdown()
    env = os.environ
    if _is_true(env.get("OTEL_SDK_DISABLED", "")):
        return False
    exporters = [exporter] if exporter is not None else _exporters_from_env(env=env)
    if not exporters:
        return False
    provider = sdk_trace.TracerProvider(resource=_resource(service_name=service_name))
    for one in exporters:
        provider.add_span_processor(export.BatchSpanProcessor(one))
    _state.provider = provider
    _state.tracer = provider.get_tracer(SCOPE, _version())
    return True


def shutdown() -> None:
    """Flush pending spans and turn tracing off again (safe to call when it was never on)."""
    provider, _state.provider, _state.tracer = _state.provider, None, _NOOP_TRACER
    if provider is not None:
        provider.shutdown()


def force_flush(*, timeout_millis: int = 5_000) -> bool:
    """Export every finished span now; True if all were exported (or tracing is off)."""
    provider = _state.provider
    return True if provider is None else provider.force_flush(timeout_millis)


def tracer() -> trace.Tracer:
    """The operator's tracer (scope ``changejob``); the no-op tracer while tracing is off."""
    return _state.tracer


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None if no span is recording.

    Stored on Jobs (annotation ``traceparent``) and in status so later work can link back.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def api_call(
    *, method: str, resource: str, namespace: str | None, name: str | None
) -> AbstractContextManager[trace.Span]:
    """A CLIENT span around one Kubernetes API request, e.g. ``PATCH changetriggeredjobs/status``.

    ``resource`` is the plural resource, optionally with its subresource. On an exception the span
    records it, is marked as an error and, if the exception has an integer ``status`` (as the
    kubernetes client's ``ApiException`` has), carries it as ``http.response.status_code``; the
    exception propagates. While tracing is off this returns a shared null context.
    """
    if _state.provider is None:
        return _OFF
    attributes: dict[str, str] = {"http.request.method": method, "k8s.resource": resource}
    if namespace is not None:
        attributes["k8s.namespace.name"] = namespace
    if name is not None:
        attributes["k8s.object.name"] = name
    return _client_span(name=f"{method} {resource}", attributes=attributes)


@contextlib.contextmanager
def _client_span(*, name: str, attributes: Mapping[str, str]) -> Iterator[trace.Span]:
    """Run the body inside a CLIENT span and describe a failure the way HTTP client spans do."""
    with _state.tracer.start_as_current_span(
        name,
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _record_failure(span=span, exc=exc)
            raise


def _record_failure(*, span: trace.Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``, with the HTTP status code when the exception carries one."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool) and status > 0:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("error.type", str(status))
    else:
        span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__qualname__))


def _exporters_from_env(*, env: Mapping[str, str]) -> list[export.SpanExporter]:
    """The exporters the standard environment variables ask for (empty: tracing stays off)."""
    names = _exporter_names(env=env)
    exporters: list[export.SpanExporter] = []
    for exporter_name in names:
        if exporter_name == "otlp":
            exporters.append(_otlp_exporter(env=env))
        elif exporter_name == "console":
            exporters.append(export.ConsoleSpanExporter(service_name=None, out=sys.stdout))
    return exporters


def _exporter_names(*, env: Mapping[str, str]) -> list[str]:
    """Parse ``OTEL_TRACES_EXPORTER``; without it, an OTLP endpoint alone implies ``otlp``."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint_set = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if endpoint_set else []
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    if "none" in names:
        return []
    for unknown in sorted(set(names) - _KNOWN_EXPORTERS):
        _log.warning("unsupported exporter in OTEL_TRACES_EXPORTER ignored", extra={"exporter": unknown})
    return [one for one in dict.fromkeys(names) if one in _KNOWN_EXPORTERS]


def _otlp_exporter(*, env: Mapping[str, str]) -> export.SpanExporter:
    """The OTLP/HTTP (protobuf) exporter; it reads its endpoint, headers and timeout from the env."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != "http/protobuf":
        _log.warning("only OTLP over http/protobuf is supported, using it", extra={"protocol": protocol})
    return trace_exporter.OTLPSpanExporter()


def _resource(*, service_name: str) -> resources.Resource:
    """SDK defaults + ``OTEL_RESOURCE_ATTRIBUTES`` + ``OTEL_SERVICE_NAME``, else ``service_name``."""
    from_env = resources.OTELResourceDetector().detect()
    attributes: dict[str, str] = {}
    if not from_env.attributes.get(resources.SERVICE_NAME):
        attributes[resources.SERVICE_NAME] = service_name
    if resources.SERVICE_VERSION not in from_env.attributes and (version := _version()):
        attributes[resources.SERVICE_VERSION] = version
    return resources.Resource.create(attributes)


def _version() -> str | None:
    """The installed distribution's version, if it is installed."""
    try:
        return metadata.version("kube-changejob")
    except metadata.PackageNotFoundError:
        return None


def _is_true(value: str) -> bool:
    """The spec's boolean parsing: only a case-insensitive ``true`` is true."""
    return value.strip().lower() == "true"
