"""The trigger decision: given reference and observed hashes and the time, fire, defer or wait.

The decision is level-triggered: it looks only at where each resource is now compared with the
reference recorded at the last trigger, never at the events in between. A change that is reverted
before the trigger fires is therefore no change, and replaying the same state (after a restart, a
resync or on another replica) gives the same answer. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Final

from changejob.domain import api

__all__ = ["Decision", "Defer", "Nothing", "Trigger", "changed_indexes", "decide"]

UNCHANGED: Final = "unchanged"
WAITING_FOR_ALL: Final = "waiting-for-all"


@dataclasses.dataclass(frozen=True, slots=True)
class Trigger:
    """Create a Job now. ``changed`` are the indexes of the resources that changed."""

    changed: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Defer:
    """A trigger is due but the cooldown holds it until ``until``; decide again then."""

    until: datetime.datetime
    changed: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Nothing:
    """Nothing to do: ``"unchanged"``, or ``"waiting-for-all"`` (condition All, not all changed)."""

    reason: str


Decision = Trigger | Defer | Nothing


def changed_indexes(references: Sequence[str], observed: Sequence[str | None]) -> tuple[int, ...]:
    """Indexes ``i`` with ``observed[i]`` known (not None) and different from ``references[i]``.

    ``None`` means there is no comparable value (object missing, forbidden or not synced yet), which
    counts as unchanged: an outage of the watch must not look like a change.
    """
    if len(references) != len(observed):
        raise ValueError(
            f"references and observed must have one entry per resource, got {len(references)} and {len(observed)}"
        )
    return tuple(
        index
        for index, (reference, current) in enumerate(zip(references, observed, strict=True))
        if current is not None and current != reference
    )


def decide(
    *,
    condition: api.Condition,
    cooldown: datetime.timedelta,
    references: Sequence[str],
    observed: Sequence[str | None],
    last_triggered: datetime.datetime | None,
    now: datetime.datetime,
) -> Decision:
    """Decide whether to trigger now.

    - ``Any``: due when at least one resource changed; ``All``: due only when every resource did
      (otherwise ``Nothing("waiting-for-all")``).
    - When due: ``Trigger`` if there was no trigger yet or the cooldown since ``last_triggered`` has
      passed (``now >= last_triggered + cooldown``); otherwise ``Defer(until=last_triggered +
      cooldown)``. A cooldown of zero never defers.
    """
    changed = changed_indexes(references, observed)
    if not changed:
        return Nothing(UNCHANGED)
    if condition == api.Condition.ALL and len(changed) != len(references):
        return Nothing(WAITING_FOR_ALL)
    if last_triggered is None:
        return Trigger(changed)
    until = last_triggered + cooldown
    if now >= until:
        return Trigger(changed)
    return Defer(until=until, changed=changed)
