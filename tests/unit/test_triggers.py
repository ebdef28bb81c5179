"""The level-triggered decision: Trigger, Defer or Nothing."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import api, triggers

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)
ANY = api.Condition.ANY
ALL = api.Condition.ALL


def decide(
    references: list[str],
    observed: list[str | None],
    *,
    condition: api.Condition = ANY,
    cooldown: datetime.timedelta = MINUTE,
    last_triggered: datetime.datetime | None = None,
    now: datetime.datetime = T0,
) -> triggers.Decision:
    return triggers.decide(
        condition=condition,
        cooldown=cooldown,
        references=references,
        observed=observed,
        last_triggered=last_triggered,
        now=now,
    )


# ---------------------------------------------------------------------------------------------
# changed_indexes


def test_changed_indexes() -> None:
    assert triggers.changed_indexes(["a", "b", "c"], ["a", "x", None]) == (1,)
    assert triggers.changed_indexes(["a", "b"], ["x", "y"]) == (0, 1)
    assert triggers.changed_indexes([], []) == ()
    assert triggers.changed_indexes(["absent"], ["h1"]) == (0,)  # the object appeared


def test_unknown_counts_as_unchanged() -> None:
    assert triggers.changed_indexes(["a", "b"], [None, None]) == ()


def test_changed_indexes_needs_one_entry_per_resource() -> None:
    with pytest.raises(ValueError, match="one entry per resource"):
        triggers.changed_indexes(["a"], ["a", "b"])


# ---------------------------------------------------------------------------------------------
# decide


def test_nothing_changed() -> None:
    assert decide(["a", "b"], ["a", "b"]) == triggers.Nothing("unchanged")
    assert decide(["a", "b"], [None, "b"]) == triggers.Nothing("unchanged")


def test_any_first_trigger_fires_at_once() -> None:
    assert decide(["a", "b"], ["a", "x"]) == triggers.Trigger(changed=(1,))


def test_any_within_cooldown_defers_until_it_ends() -> None:
    last = T0 - datetime.timedelta(seconds=20)
    assert decide(["a"], ["x"], last_triggered=last) == triggers.Defer(until=last + MINUTE, changed=(0,))


def test_cooldown_boundary_triggers() -> None:
    assert decide(["a"], ["x"], last_triggered=T0 - MINUTE) == triggers.Trigger((0,))
    just_inside = T0 - MINUTE + datetime.timedelta(microseconds=1)
    assert isinstance(decide(["a"], ["x"], last_triggered=just_inside), triggers.Defer)


def test_zero_cooldown_triggers_immediately() -> None:
    zero = datetime.timedelta(0)
    assert decide(["a"], ["x"], cooldown=zero, last_triggered=T0) == triggers.Trigger((0,))


def test_all_waits_until_every_resource_changed() -> None:
    assert decide(["a", "b"], ["x", "b"], condition=ALL) == triggers.Nothing("waiting-for-all")
    assert decide(["a", "b"], ["x", None], condition=ALL) == triggers.Nothing("waiting-for-all")
    assert decide(["a", "b"], ["x", "y"], condition=ALL) == triggers.Trigger((0, 1))


def test_all_within_cooldown_defers() -> None:
    decision = decide(["a", "b"], ["x", "y"], condition=ALL, last_triggered=T0)
    assert decision == triggers.Defer(until=T0 + MINUTE, changed=(0, 1))


def test_condition_given_as_plain_string() -> None:
    decision = triggers.decide(
        condition="All",  # type: ignore[arg-type]
        cooldown=MINUTE,
        references=["a", "b"],
        observed=["x", "b"],
        last_triggered=None,
        now=T0,
    )
    assert decision == triggers.Nothing("waiting-for-all")


def test_reverted_change_is_no_change() -> None:
    # Deferred change: a -> x ...
    assert isinstance(decide(["a"], ["x"], last_triggered=T0), triggers.Defer)
    # ... reverted to a before the cooldown ended: when the deferred decision is re-run, nothing fires.
    assert decide(["a"], ["a"], last_triggered=T0, now=T0 + 2 * MINUTE) == triggers.Nothing("unchanged")


def test_deferred_change_fires_when_the_cooldown_ends() -> None:
    first = decide(["a"], ["x"], last_triggered=T0, now=T0 + datetime.timedelta(seconds=5))
    assert isinstance(first, triggers.Defer)
    assert decide(["a"], ["x"], last_triggered=T0, now=first.until) == triggers.Trigger((0,))


def test_last_trigger_in_the_future_defers() -> None:
    later = T0 + datetime.timedelta(seconds=10)  # another replica's clock runs ahead
    assert decide(["a"], ["x"], last_triggered=later) == triggers.Defer(until=later + MINUTE, changed=(0,))


# ---------------------------------------------------------------------------------------------
# Properties

HASHES = st.sampled_from(["h1", "h2", "h3", "absent"])


@st.composite
def situations(draw: st.DrawFn) -> dict[str, object]:
    count = draw(st.integers(0, 5))
    references = draw(st.lists(HASHES, min_size=count, max_size=count))
    observed = draw(st.lists(st.none() | HASHES, min_size=count, max_size=count))
    offset = draw(st.none() | st.integers(-3600, 3600))
    return {
        "condition": draw(st.sampled_from(list(api.Condition))),
        "cooldown": datetime.timedelta(seconds=draw(st.integers(0, 3600))),
        "references": references,
        "observed": observed,
        "last_triggered": None if offset is None else T0 + datetime.timedelta(seconds=offset),
        "now": T0,
    }


@RELAXED
@given(situations())
def test_never_triggers_without_a_change(case: dict[str, object]) -> None:
    decision = triggers.decide(**case)  # type: ignore[arg-type]
    references, observed = case["references"], case["observed"]
    assert isinstance(references, list)
    assert isinstance(observed, list)
    if all(o is None or o == r for r, o in zip(references, observed, strict=True)):
        assert decision == triggers.Nothing("unchanged")
    if isinstance(decision, triggers.Trigger | triggers.Defer):
        assert decision.changed
        for index in decision.changed:
            assert observed[index] is not None
            assert observed[index] != references[index]


@RELAXED
@given(situations())
def test_defer_only_while_within_cooldown(case: dict[str, object]) -> None:
    decision = triggers.decide(**case)  # type: ignore[arg-type]
    last, cooldown, now = case["last_triggered"], case["cooldown"], case["now"]
    assert isinstance(cooldown, datetime.timedelta)
    assert isinstance(now, datetime.datetime)
    if isinstance(decision, triggers.Defer):
        assert isinstance(last, datetime.datetime)
        assert now < last + cooldown
        assert decision.until == last + cooldown
    if isinstance(decision, triggers.Trigger):
        assert last is None or (isinstance(last, datetime.datetime) and now >= last + cooldown)


@RELAXED
@given(situations())
def test_all_fires_only_when_every_index_changed(case: dict[str, object]) -> None:
    case["condition"] = ALL
    decision = triggers.decide(**case)  # type: ignore[arg-type]
    references = case["references"]
    assert isinstance(references, list)
    if isinstance(decision, triggers.Trigger | triggers.Defer):
        assert decision.changed == tuple(range(len(references)))


@RELAXED
@given(situations())
def test_any_fires_or_defers_whenever_something_changed(case: dict[str, object]) -> None:
    case["condition"] = ANY
    decision = triggers.decide(**case)  # type: ignore[arg-type]
    changed = triggers.changed_indexes(case["references"], case["observed"])  # type: ignore[arg-type]
    if changed:
        assert isinstance(decision, triggers.Trigger | triggers.Defer)
        assert decision.changed == changed


@RELAXED
@given(situations())
def test_decide_is_deterministic(case: dict[str, object]) -> None:
    assert triggers.decide(**case) == triggers.decide(**case)  # type: ignore[arg-type]
