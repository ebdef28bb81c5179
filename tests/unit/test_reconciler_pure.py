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


def _entry(hash_: str, reference: str | None) -> dict[str, object]:
    entry: dict[str, object] = {
        "hash": hash_,
        "fields": [{"field": "data", "hash": hash_, **({"lastTriggeredHash": reference} if reference else {})}],
        "changed": reference is not None and hash_ not in (reference, reconciler.ABSENT),
    }
    if reference is not None:
        entry["lastTriggeredHash"] = reference
    return entry


def test_cover_moves_present_references_to_what_the_job_saw() -> None:
    changed, steady = _entry("h2", "h1"), _entry("k1", "k1")
    reconciler.cover([changed, steady], ["h2", "k1"])
    assert changed["lastTriggeredHash"] == "h2" and changed["changed"] is False
    assert changed["fields"] == [{"field": "data", "hash": "h2", "lastTriggeredHash": "h2"}]
    assert steady["lastTriggeredHash"] == "k1" and steady["changed"] is False


def test_cover_keeps_the_reference_of_a_resource_the_job_did_not_see() -> None:
    """A Missing (or Forbidden/Unknown) resource is covered as ``absent``: its reference must stay,
    or its reappearance with the same content would look like a change and fire a spurious Job."""
    changed, missing, never_seen = _entry("h2", "h1"), _entry(reconciler.ABSENT, "m1"), _entry(reconciler.ABSENT, None)
    reconciler.cover([changed, missing, never_seen], ["h2", reconciler.ABSENT, reconciler.ABSENT])
    assert missing["lastTriggeredHash"] == "m1" and missing["changed"] is False
    assert missing["fields"] == [{"field": "data", "hash": reconciler.ABSENT, "lastTriggeredHash": "m1"}]
    assert "lastTriggeredHash" not in never_seen and never_seen["changed"] is False
    assert changed["lastTriggeredHash"] == "h2"


def test_cover_of_an_adopted_job_for_an_older_state_keeps_the_newer_change_pending() -> None:
    """Adopting a Job an earlier attempt made: it covered ``h2``, the resource has moved on to ``h3``."""
    entry, gone = _entry("h3", "h1"), _entry(reconciler.ABSENT, "g1")
    reconciler.cover([entry, gone], ["h2", "g2"])
    assert entry["lastTriggeredHash"] == "h2" and entry["changed"] is True
    assert gone["lastTriggeredHash"] == "g2" and gone["changed"] is False
