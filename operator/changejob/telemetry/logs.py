"""Structured logging on the standard library's ``logging``: one line per record, text or JSON.

JSON line fields: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``msg``, every key
passed in ``extra`` (e.g. ``ctj="ns/name"``), ``trace_id``/``span_id`` of the current recording
OpenTelemetry span, and ``exc`` with the formatted exception. The text format carries the same:

    2026-01-01T00:00:00.000Z INFO  changejob.runtime  job created  ctj=ns/name job=nightly-0a1b2c3d4e

Every line about a CTJ names it in ``ctj`` (``extra={"ctj": "ns/name"}``), so ``grep ctj=ns/name`` or a JSON
filter finds all of them. Values under keys named ``data``, ``stringData`` or ``binaryData`` (the
payload of ConfigMaps and Secrets), at any depth of an ``extra`` value, are replaced by
``[redacted]``: defence in depth, callers are not meant to log them at all.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Literal

import orjson
from opentelemetry import trace

REDACTED = "[redacted]"
_REDACTED_KEYS = frozenset({"data", "stringdata", "binarydata"})
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_HANDLER_NAME = "changejob"
_TEXT_LEVEL = {"WARNING": "WARN", "CRITICAL": "CRIT"}
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


def setup(
    *, level: str = "info", fmt: Literal["text", "json"] = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record (ours and libraries') at ``level`` or above to ``stream`` (stderr).

    Replaces a handler installed by an earlier call, so calling it again reconfigures rather than
    duplicating lines; handlers installed by others are left alone. Returns the handler.
    """
    try:
        numeric_level = _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected 'text' or 'json'")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    return handler


def redact(value: Any) -> Any:
    """``value`` with everything under a ``data``/``stringData``/``binaryData`` key replaced."""
    if isinstance(value, Mapping):
        return {key: REDACTED if _is_redacted_key(key) else redact(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [redact(inner) for inner in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record`` (redacted), then the current trace and span ids."""
    extra = {
        key: REDACTED if _is_redacted_key(key) else redact(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }
    span = trace.get_current_span()
    if span.is_recording():
        span_context = span.get_span_context()
        extra.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        extra.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return extra


def timestamp(record: logging.LogRecord) -> str:
    """``record``'s creation time in RFC 3339, UTC, with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (orjson); never raises on odd ``extra`` values (they become strings)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line (without the newline, which the handler adds)."""
        document: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return _dumps(document).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger  msg  key=value ...``; values with spaces or quotes are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line, followed by the traceback's lines if there is one."""
        level = _TEXT_LEVEL.get(record.levelname, record.levelname)
        line = f"{timestamp(record)} {level:<5} {record.name}  {record.getMessage()}"
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in _ordered(extra_fields(record)))
        if pairs:
            line = f"{line}  {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _ordered(extra: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``ctj`` first, trace ids last, the rest in the order given."""
    head = [("ctj", extra["ctj"])] if "ctj" in extra else []
    tail = [(key, extra[key]) for key in ("trace_id", "span_id") if key in extra]
    body = [(key, value) for key, value in extra.items() if key not in {"ctj", "trace_id", "span_id"}]
    return head + body + tail


def _text_value(value: Any) -> str:
    """A logfmt-style value: bare when it is a plain token, JSON otherwise."""
    if isinstance(value, str) and value and not any(ch.isspace() or ch in '"=' for ch in value):
        return value
    return _dumps(value).decode()


def _dumps(value: Any) -> bytes:
    """orjson, with ``str()`` for anything it cannot encode natively (and never an exception)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_stringify(value), option=orjson.OPT_NON_STR_KEYS)


def _stringify(value: Any) -> Any:
    """``value`` with every leaf that is not a str, bool or None turned into a string."""
    if isinstance(value, Mapping):
        return {str(key): _stringify(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify(inner) for inner in value]
    return value if value is None or isinstance(value, str | bool) else str(value)


def _is_redacted_key(key: object) -> bool:
    """Whether ``key`` names a payload that must never reach a log."""
    return isinstance(key, str) and key.lower() in _REDACTED_KEYS
