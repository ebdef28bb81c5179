"""``metav1.Condition`` lists as plain dicts, and the RFC 3339 times they carry.

Conditions follow the Kubernetes API conventions: one entry per ``type``, ``lastTransitionTime``
moves only when ``status`` flips (so "since when" stays meaningful), and the list has a stable
order so that rewriting an unchanged status produces an identical object.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Final

from changejob.domain import bodies

__all__ = ["ORDER", "get_condition", "parse_time", "precise_time", "rfc3339", "set_condition"]

ORDER: Final = ("Ready", "Available", "Progressing", "Degraded")
"""Condition types in the order they appear; any other type follows them, in its existing order."""

_RANK: Final = {kind: rank for rank, kind in enumerate(ORDER)}
_RFC3339: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?")


def rfc3339(dt: datetime.datetime) -> str:
    """``2024-05-01T12:00:00Z``: UTC, whole seconds, as Kubernetes writes ``metav1.Time``.

    A naive datetime is taken to be UTC already.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_time(moment: datetime.datetime) -> str:
    """RFC 3339, UTC, with microseconds (``metav1.MicroTime``): for times a cooldown is measured from,
    which must not be truncated to the second."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime.datetime:
    """Parse an RFC 3339 time (``Z`` or an offset, optional fraction) into an aware UTC datetime.

    A time without an offset is taken to be UTC. Raises ``ValueError`` for anything else.
    """
    match = _RFC3339.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'invalid time {text!r}: expected RFC 3339, e.g. "2024-05-01T12:00:00Z"')
    day, clock, fraction, offset = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")  # Go writes up to nanoseconds; keep microseconds
    zone = "+00:00" if offset in (None, "Z", "z") else offset
    try:
        parsed = datetime.datetime.fromisoformat(f"{day}T{clock}.{micros}{zone}")
    except ValueError as error:
        raise ValueError(f"invalid time {text!r}: {error}") from None
    return parsed.astimezone(datetime.UTC)


def get_condition(conditions: Sequence[bodies.Condition] | None, type: str) -> bodies.Condition | None:
    """The condition of this ``type``, or None."""
    for condition in conditions or ():
        if condition.get("type") == type:
            return condition
    return None


def set_condition(
    conditions: Sequence[bodies.Condition] | None,
    *,
    type: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime.datetime,
    observed_generation: int,
) -> list[bodies.Condition]:
    """Return a new list with the condition ``type`` replaced or added; the input is not modified.

    ``lastTransitionTime`` is ``now`` when the status flips (or the condition is new) and is kept
    otherwise. The result is ordered Ready, Available, Progressing, Degraded, then other types.
    """
    text = "True" if status else "False"
    previous = get_condition(conditions, type)
    transition = rfc3339(now)
    if previous is not None and previous.get("status") == text and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    updated: bodies.Condition = {
        "type": type,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": observed_generation,
    }
    result = [updated if c.get("type") == type else c.copy() for c in conditions or ()]
    if previous is None:
        result.append(updated)
    # sort() is stable, so types outside ORDER keep their relative order (a new one goes last).
    result.sort(key=lambda c: _RANK.get(c.get("type", ""), len(ORDER)))
    return result
