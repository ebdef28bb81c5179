"""Pure helpers of the reconciler (no cluster needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from changejob.domain import conditions
from changejob.runtime import reconciler


def test_trigger_times_keep_sub_second_precision() -> None:
    """The cooldown is measured from lastTriggeredTime: truncating it would shorten the cooldown."""
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = reconciler.precise_time(moment)
    assert text == "2026-01-02T03:04:05.678901Z"
    assert conditions.parse_time(text) == moment
    later = moment.astimezone(UTC) + timedelta(microseconds=1)
    assert reconciler.precise_time(later) != text
