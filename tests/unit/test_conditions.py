"""metav1.Condition lists and RFC 3339 times."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import conditions

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def set_(
    current: list[dict[str, Any]] | None,
    type: str,
    status: bool,
    *,
    reason: str = "Reason",
    message: str = "message",
    now: datetime.datetime = T0,
    generation: int = 1,
) -> list[dict[str, Any]]:
    return conditions.set_condition(
        current,
        type=type,
        status=status,
        reason=reason,
        message=message,
        now=now,
        observed_generation=generation,
    )


def test_adds_a_condition() -> None:
    assert set_([], "Ready", True, reason="Reconciled", message="ok", generation=3) == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "ok",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
            "observedGeneration": 3,
        }
    ]
    assert set_(None, "Degraded", False)[0]["status"] == "False"


def test_transition_time_moves_only_when_status_flips() -> None:
    first = set_([], "Ready", True, now=T0)
    same = set_(first, "Ready", True, reason="Other", message="changed", now=T1, generation=2)
    assert same[0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert (same[0]["reason"], same[0]["message"], same[0]["observedGeneration"]) == ("Other", "changed", 2)
    flipped = set_(same, "Ready", False, now=T1)
    assert flipped[0]["lastTransitionTime"] == "2024-05-01T12:05:00Z"


def test_unknown_to_true_is_a_transition() -> None:
    current = [{"type": "Ready", "status": "Unknown", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    assert set_(current, "Ready", True, now=T1)[0]["lastTransitionTime"] == "2024-05-01T12:05:00Z"


def test_same_status_without_a_previous_time_gets_now() -> None:
    current = [{"type": "Ready", "status": "True"}]
    assert set_(current, "Ready", True, now=T1)[0]["lastTransitionTime"] == "2024-05-01T12:05:00Z"


def test_stable_order() -> None:
    result: list[dict[str, Any]] = []
    for kind in ("Custom", "Degraded", "Zeta", "Progressing", "Ready", "Available"):
        result = set_(result, kind, True)
    assert [c["type"] for c in result] == ["Ready", "Available", "Progressing", "Degraded", "Custom", "Zeta"]
    result = set_(result, "Custom", False)
    assert [c["type"] for c in result] == ["Ready", "Available", "Progressing", "Degraded", "Custom", "Zeta"]


def test_replaces_without_duplicating_and_keeps_other_conditions() -> None:
    current = set_(set_([], "Ready", True), "Available", True, reason="Watching")
    result = set_(current, "Ready", False, reason="Degraded")
    assert [c["type"] for c in result] == ["Ready", "Available"]
    assert result[1] == current[1]


def test_input_is_not_modified_or_shared() -> None:
    current = set_(set_([], "Ready", True), "Custom", True)
    before = copy.deepcopy(current)
    result = set_(current, "Ready", False, now=T1)
    assert current == before
    result[1]["status"] = "changed"
    assert current == before


def test_get_condition() -> None:
    current = set_(set_([], "Ready", True), "Degraded", False)
    found = conditions.get_condition(current, "Degraded")
    assert found is not None
    assert found["status"] == "False"
    assert conditions.get_condition(current, "Progressing") is None
    assert conditions.get_condition([], "Ready") is None
    assert conditions.get_condition(None, "Ready") is None


# ---------------------------------------------------------------------------------------------
# Times


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (T0, "2024-05-01T12:00:00Z"),
        (
            datetime.datetime(2024, 5, 1, 14, 0, 59, 999999, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            "2024-05-01T12:00:59Z",
        ),
        (datetime.datetime(2024, 5, 1, 12, 0), "2024-05-01T12:00:00Z"),
    ],
)
def test_rfc3339(value: datetime.datetime, text: str) -> None:
    assert conditions.rfc3339(value) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("2024-05-01t12:00:00z", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("2024-05-01T14:00:00+02:00", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("2024-05-01T12:00:00.5Z", datetime.datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=datetime.UTC)),
        ("2024-05-01T12:00:00.123456789Z", datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)),
        ("2024-05-01T12:00:00", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime.datetime) -> None:
    parsed = conditions.parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is datetime.UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T25:00:00Z"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        conditions.parse_time(text)


@RELAXED
@given(
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 1),
        max_value=datetime.datetime(9999, 1, 1),
        timezones=st.just(datetime.UTC),
    )
)
def test_time_round_trip_at_second_precision(value: datetime.datetime) -> None:
    assert conditions.parse_time(conditions.rfc3339(value)) == value.replace(microsecond=0)
