"""Logs: JSON and text lines carry the fields, the CTJ, trace ids, and never Secret payloads."""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import in_memory_span_exporter

from changejob.telemetry import logs, tracing

pytestmark = pytest.mark.unit

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave the root logger as pytest configured it (and ignore OTEL_* settings of the machine)."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    tracing.shutdown()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, parsed."""
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_fields_and_extras() -> None:
    stream = io.StringIO()
    logs.setup(level="info", fmt="json", stream=stream)
    before = time.time()
    logging.getLogger("changejob.runtime").info(
        "job %s created", "nightly-1", extra={"ctj": "team-a/nightly", "sequence": 4}
    )
    (line,) = json_lines(stream)
    assert set(line) == {"ts", "level", "logger", "msg", "ctj", "sequence"}
    assert line["level"] == "info"
    assert line["logger"] == "changejob.runtime"
    assert line["msg"] == "job nightly-1 created"
    assert line["ctj"] == "team-a/nightly"
    assert line["sequence"] == 4
    assert RFC3339_MS.match(line["ts"])
    logged = datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 0.002 <= logged <= time.time()


def test_level_filters_and_is_validated() -> None:
    stream = io.StringIO()
    logs.setup(level="WARNING", fmt="json", stream=stream)
    log = logging.getLogger("changejob.test")
    log.info("hidden")
    log.warning("shown")
    assert [line["msg"] for line in json_lines(stream)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level"):
        logs.setup(level="verbose")


def test_setup_twice_reconfigures_instead_of_duplicating() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup(fmt="json", stream=first)
    logs.setup(fmt="json", stream=second)
    logging.getLogger("changejob.test").warning("once")
    assert first.getvalue() == ""
    assert [line["msg"] for line in json_lines(second)] == ["once"]


def test_trace_and_span_ids_of_the_recording_span() -> None:
    stream = io.StringIO()
    logs.setup(fmt="json", stream=stream)
    log = logging.getLogger("changejob.test")
    log.info("outside")
    assert tracing.setup(exporter=in_memory_span_exporter.InMemorySpanExporter())
    with tracing.tracer().start_as_current_span("ctj.decide") as span:
        log.info("inside")
        context = span.get_span_context()
    outside, inside = json_lines(stream)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert inside["trace_id"] == trace.format_trace_id(context.trace_id)
    assert inside["span_id"] == trace.format_span_id(context.span_id)


def test_exception_is_included() -> None:
    stream = io.StringIO()
    logs.setup(fmt="json", stream=stream)
    try:
        raise ValueError("bad field path")
    except ValueError:
        logging.getLogger("changejob.test").exception("reconcile failed", extra={"ctj": "ns/a"})
    (line,) = json_lines(stream)
    assert line["level"] == "error"
    assert line["exc"].startswith("Traceback")
    assert "ValueError: bad field path" in line["exc"]


def test_payloads_are_redacted_at_any_depth() -> None:
    stream = io.StringIO()
    logs.setup(fmt="json", stream=stream)
    secret = {"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}, "stringData": {"k": "v"}}
    logging.getLogger("changejob.test").info(
        "observed",
        extra={"data": {"x": "y"}, "object": secret, "items": [{"binaryData": {"b": "AAE="}}]},
    )
    (line,) = json_lines(stream)
    assert line["data"] == logs.REDACTED
    assert line["object"] == {"metadata": {"name": "s"}, "data": logs.REDACTED, "stringData": logs.REDACTED}
    assert line["items"] == [{"binaryData": logs.REDACTED}]
    assert "aHVudGVyMg" not in stream.getvalue()


def test_unencodable_values_become_strings() -> None:
    stream = io.StringIO()
    logs.setup(fmt="json", stream=stream)
    logging.getLogger("changejob.test").info("odd", extra={"when": object, "big": 2**70, "set": {1}})
    (line,) = json_lines(stream)
    assert line["when"] == "<class 'object'>"
    assert line["big"] == str(2**70)
    assert line["set"] == "{1}"


def test_text_line_format() -> None:
    stream = io.StringIO()
    logs.setup(fmt="text", stream=stream)
    log = logging.getLogger("changejob.runtime")
    log.info("job created", extra={"ctj": "ns/name", "job": "name-0a1", "reason": "two words", "n": 2})
    log.warning("slow", extra={"ctj": "ns/name"})
    first, second = stream.getvalue().splitlines()
    pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z "
    expected = r'INFO  changejob\.runtime  job created  ctj=ns/name job=name-0a1 reason="two words" n=2$'
    assert re.match(pattern + expected, first)
    assert re.match(pattern + r"WARN  changejob\.runtime  slow  ctj=ns/name$", second)


def test_text_line_puts_trace_ids_last_and_traceback_below() -> None:
    stream = io.StringIO()
    logs.setup(fmt="text", stream=stream)
    assert tracing.setup(exporter=in_memory_span_exporter.InMemorySpanExporter())
    with tracing.tracer().start_as_current_span("x") as span:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("changejob.t").exception("failed", extra={"ctj": "ns/a", "stringData": "v"})
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    head, *rest = stream.getvalue().splitlines()
    assert re.search(rf"  ctj=ns/a stringData=\[redacted\] trace_id={trace_id} span_id=[0-9a-f]{{16}}$", head)
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"
