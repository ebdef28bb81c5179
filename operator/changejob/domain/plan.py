"""The plan of one reconcile: what the status, the Job, the Events and the deletions should be.

:func:`plan` takes a CTJ (its metadata and recorded status), its parsed spec, what is observed of
each of its resources now, the Jobs it has, and the time; it returns a :class:`Plan`. Nothing is
written here: the runtime's reconciler executes the plan (create the Job, write the status with a
compare-and-swap, send the Events, delete the pruned Jobs). A spec that cannot be acted on is
planned by :func:`invalid`.

The steps, each one function:

- ``_assess``: one ``status.resourceHashes`` entry per resource: observed hash, reference (the hash
  the last trigger covered; the first hash ever seen becomes the reference: a *baseline*).
- ``_decide``: trigger now, defer until the cooldown ends, or nothing (``triggers.decide``).
- ``_trigger`` / ``_defer``: the new Job and the status it leaves, or the deferral.
- ``_conditions``: Ready, Available, Progressing, Degraded.
- ``_prune``: the finished Jobs beyond ``history``.

When the Job of a trigger turns out to exist already (an earlier attempt, ours or another replica's,
created it), the runtime plans again with ``adopted``: the plan then covers the hashes that Job was
made for, not the ones observed now, so a change that happened since still counts.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from changejob.domain import api, bodies, conditions, hashing, jobs, triggers
from changejob.domain.observed import FORBIDDEN, MISSING, UNKNOWN, Observed

__all__ = ["ABSENT", "Adopted", "Event", "NewJob", "Plan", "cover", "identity", "invalid", "plan"]

ABSENT: Final = hashing.ABSENT_DIGEST
"""The hash recorded for a resource that is not Present (and the hash a Job covered for it)."""
DEFER_SLACK: Final = 0.05
"""Seconds added to a deferral's wait so the next reconcile is never a hair too early."""

Identity = tuple[str, str, str, str, tuple[str, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A core/v1 Event to record on the CTJ."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """The Job of a trigger: its body and what it was made for."""

    body: bodies.Job
    sequence: int
    changed: tuple[int, ...]  # indexes of the resources that changed
    described: tuple[str, ...]  # ``Kind/namespace/name:field|field`` of each changed resource

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]


@dataclasses.dataclass(frozen=True, slots=True)
class Adopted:
    """The Job of this trigger's name exists already; it was made for ``hashes`` (one per resource)."""

    job: jobs.JobView
    hashes: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What one reconcile should do; executed in this order by the runtime:

    1. create ``job`` (if any); 2. write ``status`` if it differs from the recorded one; 3. after a
    successful write, send ``events`` and forget the changes of the resources in ``settled``;
    4. delete the Jobs in ``prune`` and send ``pruned_event``; 5. come back after ``requeue_after``.
    """

    status: bodies.CtjStatus
    decision: triggers.Decision | None = None  # None: the spec is invalid
    job: NewJob | None = None
    events: tuple[Event, ...] = ()
    prune: tuple[str, ...] = ()
    requeue_after: float | None = None
    outcome: str | None = None  # "deferred" or "coalesced" (a Job's own outcome is the runtime's to tell)
    settled: tuple[int, ...] = ()  # resources whose observed changes this status accounts for

    @property
    def pruned_event(self) -> Event | None:
        if not self.prune:
            return None
        names = ", ".join(sorted(self.prune))
        return Event("Normal", "JobsPruned", f"deleted {len(self.prune)} old job(s): {names}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Acted:
    """What the decision does: a Job (and its view, for status and pruning), Events, a requeue."""

    job: NewJob | None = None
    made: jobs.JobView | None = None
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    outcome: str | None = None


@dataclasses.dataclass(slots=True)
class _Assessment:
    entries: list[bodies.ResourceHash]
    references: list[str]  # per resource: the reference ("" when there is none)
    current: list[str | None]  # per resource: the comparable observed hash (None: nothing to compare)
    baselined: list[str]  # resources whose first observed hash became their reference now


def plan(
    *,
    ctj: bodies.Ctj,
    spec: api.Spec,
    observed: Sequence[Observed],
    jobs_: Iterable[jobs.JobView],
    now: datetime.datetime,
    adopted: Adopted | None = None,
) -> Plan:
    """The plan for ``ctj`` (``observed``: one per ``spec.resources``; ``jobs_``: the Jobs it has)."""
    meta = ctj["metadata"]
    old = ctj.get("status") or {}
    assessed = _assess(spec, old, observed)
    decision = _decide(spec, old, assessed, now)
    status = old.copy()
    status.pop("nextTriggerTime", None)
    status["resourceHashes"] = assessed.entries
    status["observedGeneration"] = int(meta.get("generation") or 0)
    status.setdefault("triggerCount", 0)
    acted = _act(meta, spec, old, status, decision, adopted, now)
    known = [j for j in jobs_ if acted.made is None or j.name != acted.made.name]
    known += [acted.made] if acted.made is not None else []
    _job_status(status, known)
    status["conditions"] = _conditions(spec, status, observed, decision, status["observedGeneration"], now)
    baseline = [Event("Normal", "BaselineRecorded", "recorded baseline of " + ", ".join(assessed.baselined))]
    return Plan(
        status=status,
        decision=decision,
        job=acted.job,
        events=(*(baseline if assessed.baselined else ()), *acted.events, *_missing_events(old, assessed.entries)),
        prune=_prune(spec, meta.get("uid", ""), known),
        requeue_after=acted.requeue_after,
        outcome=acted.outcome,
        settled=tuple(i for i, entry in enumerate(assessed.entries) if not entry["changed"]),
    )


def invalid(*, ctj: bodies.Ctj, problems: Sequence[str], now: datetime.datetime) -> Plan:
    """The plan for a CTJ whose spec cannot be acted on: every problem, in status and one Event."""
    message = "; ".join(problems)
    status = (ctj.get("status") or {}).copy()
    gen = int(ctj["metadata"].get("generation") or 0)
    conds = status.get("conditions") or []
    was = conditions.get_condition(conds, "Degraded")
    for type_, flag, reason, msg in (
        ("Ready", False, "InvalidSpec", message),
        ("Available", False, "InvalidSpec", message),
        ("Progressing", False, "InvalidSpec", "nothing to do until the spec is fixed"),
        ("Degraded", True, "InvalidSpec", message),
    ):
        conds = conditions.set_condition(
            conds, type=type_, status=flag, reason=reason, message=msg, now=now, observed_generation=gen
        )
    status["conditions"] = conds
    status["observedGeneration"] = gen
    status.pop("nextTriggerTime", None)
    repeated = was is not None and was.get("reason") == "InvalidSpec" and was.get("message") == message
    return Plan(status=status, events=() if repeated else (Event("Warning", "InvalidSpec", message),))


# --------------------------------------------------------------------------------------------------
# Steps


def _assess(spec: api.Spec, old: bodies.CtjStatus, observed: Sequence[Observed]) -> _Assessment:
    previous = {identity(e): e for e in old.get("resourceHashes") or ()}
    out = _Assessment(entries=[], references=[], current=[], baselined=[])
    for ref, seen in zip(spec.resources, observed, strict=True):
        prev = previous.get(_ref_identity(ref))
        reference = prev.get("lastTriggeredHash") if prev else None
        field_refs = {f["field"]: f.get("lastTriggeredHash") for f in (prev or {}).get("fields") or ()}
        if reference is None and seen.present:
            reference = seen.hash  # baseline: first sight of this resource with these fields
            field_refs = dict(seen.fields)
            out.baselined.append(ref.describe())
        out.entries.append(_entry(ref, seen, reference, field_refs))
        out.references.append(reference or "")
        out.current.append(seen.hash if seen.present and reference is not None else None)
    return out


def _decide(spec: api.Spec, old: bodies.CtjStatus, assessed: _Assessment, now: datetime.datetime) -> triggers.Decision:
    last = old.get("lastTriggeredTime")
    return triggers.decide(
        condition=spec.condition,
        cooldown=spec.cooldown,
        references=assessed.references,
        observed=assessed.current,
        last_triggered=conditions.parse_time(last) if last else None,
        now=now,
    )


def _act(
    meta: bodies.ObjectMeta,
    spec: api.Spec,
    old: bodies.CtjStatus,
    status: bodies.CtjStatus,
    decision: triggers.Decision,
    adopted: Adopted | None,
    now: datetime.datetime,
) -> _Acted:
    if isinstance(decision, triggers.Trigger):
        job = _trigger(meta, spec, status, decision.changed, adopted, now)
        made = adopted.job if adopted is not None else jobs.JobView(job.name, "Active", job.sequence, "", meta["uid"])
        return _Acted(job=job, made=made, events=tuple(_trigger_events(job)))
    if isinstance(decision, triggers.Defer):
        outcome, events = _defer(spec, old, status, decision)
        wait = max(0.0, (decision.until - now).total_seconds()) + DEFER_SLACK
        return _Acted(events=tuple(events), requeue_after=wait, outcome=outcome)
    return _Acted()


def _trigger(
    meta: bodies.ObjectMeta,
    spec: api.Spec,
    status: bodies.CtjStatus,
    changed: tuple[int, ...],
    adopted: Adopted | None,
    now: datetime.datetime,
) -> NewJob:
    """The Job of this trigger; ``status`` is moved to what it covers."""
    entries = status["resourceHashes"]
    sequence = int(status.get("triggerCount") or 0) + 1
    described = tuple(_describe_change(spec.resources[i], entries[i]) for i in changed)
    hashes = [e["hash"] for e in entries]
    body = jobs.build_job(owner=meta, template=spec.job_template, sequence=sequence, changed=described, hashes=hashes)
    created_at = now
    if adopted is not None:
        if len(adopted.hashes) == len(entries) and all(adopted.hashes):  # else: not ours to read
            hashes = list(adopted.hashes)
        if adopted.job.created:
            created_at = conditions.parse_time(adopted.job.created)
    cover(entries, hashes)
    job = NewJob(body=body, sequence=sequence, changed=changed, described=described)
    status["triggerCount"] = sequence
    status["lastTriggeredTime"] = conditions.precise_time(created_at)
    status["lastJobName"] = job.name
    status["lastJobStatus"] = "Active"
    return job


def _trigger_events(job: NewJob) -> list[Event]:
    return [
        Event("Normal", "ChangeDetected", "changed: " + ", ".join(job.described)),
        Event("Normal", "JobCreated", f"created job {job.name} (trigger {job.sequence})"),
    ]


def _defer(
    spec: api.Spec, old: bodies.CtjStatus, status: bodies.CtjStatus, decision: triggers.Defer
) -> tuple[str | None, list[Event]]:
    """Record the deferral; a new one is an Event, a change joining it is "coalesced"."""
    status["nextTriggerTime"] = conditions.precise_time(decision.until)
    if old.get("nextTriggerTime") != status["nextTriggerTime"]:
        names = ", ".join(spec.resources[i].describe() for i in decision.changed)
        message = (
            f"change of {names} deferred by cooldown {api.format_duration(spec.cooldown)} "
            f"until {status['nextTriggerTime']}"
        )
        return "deferred", [Event("Normal", "TriggerDeferred", message)]
    if _hashes_moved(old, status["resourceHashes"]):
        return "coalesced", []
    return None, []


def _job_status(status: bodies.CtjStatus, known: Iterable[jobs.JobView]) -> None:
    """``lastJobStatus`` from the last Job's phase, when it is known."""
    job_name = status.get("lastJobName")
    if job_name:
        for job in known:
            if job.name == job_name:
                status["lastJobStatus"] = job.phase


def _conditions(
    spec: api.Spec,
    status: bodies.CtjStatus,
    observed: Sequence[Observed],
    decision: triggers.Decision,
    generation: int,
    now: datetime.datetime,
) -> list[bodies.Condition]:
    missing = [
        f"{spec.resources[i].describe()}: {o.message or 'not found'}"
        for i, o in enumerate(observed)
        if o.state in (MISSING, FORBIDDEN, UNKNOWN)
    ]
    forbidden = any(o.state == FORBIDDEN for o in observed)
    conds = status.get("conditions") or []

    def put(type_: str, flag: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(
            conds, type=type_, status=flag, reason=reason, message=message, now=now, observed_generation=generation
        )

    if missing:
        reason = "ResourceForbidden" if forbidden else "ResourceMissing"
        put("Ready", False, reason, "; ".join(missing))
        put("Degraded", True, reason, "; ".join(missing))
    else:
        put("Ready", True, "Reconciled", f"watching {len(observed)} resource(s)")
        put("Degraded", False, "AsExpected", "all watched resources are readable")
    put("Available", True, "Watching", f"watching {len(observed)} resource(s), condition {spec.condition}")
    job_name = status.get("lastJobName")
    if isinstance(decision, triggers.Defer):
        put("Progressing", True, "CooldownDeferred", f"trigger deferred by cooldown until {status['nextTriggerTime']}")
    elif status.get("lastJobStatus") == "Active" and job_name:
        put("Progressing", True, "JobActive", f"job {job_name} is running")
    else:
        put("Progressing", False, "Idle", "waiting for changes")
    return conds


def _missing_events(old: bodies.CtjStatus, entries: Sequence[bodies.ResourceHash]) -> list[Event]:
    """A Warning when a resource becomes Missing or Forbidden (not again while it stays so)."""
    before = {identity(e): e.get("state") for e in old.get("resourceHashes") or ()}
    return [
        Event("Warning", f"Resource{state}", entry.get("message") or state)
        for entry in entries
        if (state := entry.get("state", "")) in (MISSING, FORBIDDEN) and before.get(identity(entry)) != state
    ]


def _prune(spec: api.Spec, uid: str, known: Iterable[jobs.JobView]) -> tuple[str, ...]:
    mine = [j for j in known if j.owner_uid == uid]
    if len(mine) <= spec.history:
        return ()
    return tuple(jobs.prune_plan(jobs=mine, history=spec.history))


# --------------------------------------------------------------------------------------------------
# Status entries


def cover(entries: Sequence[bodies.ResourceHash], hashes: Sequence[str]) -> None:
    """Move each entry's reference to the hash the new Job covered (``hashes``, one per entry).

    A resource that was not Present when the Job was made (Missing, Forbidden, Unknown: covered as
    ``absent``) keeps its previous reference: the Job did not see it, and taking ``absent`` as its
    reference would make its next sighting look like a change and fire a Job nobody asked for.
    """
    for entry, covered_hash in zip(entries, hashes, strict=True):
        if covered_hash == ABSENT:
            continue
        entry["lastTriggeredHash"] = covered_hash
        if entry["hash"] == covered_hash:
            for f in entry["fields"]:
                f["lastTriggeredHash"] = f["hash"]
            entry["changed"] = False
        else:  # adopted a Job made for an older state: what changed since still counts
            entry["changed"] = entry["hash"] != ABSENT


def identity(entry: Mapping[str, object]) -> Identity:
    """What identifies a status entry across reconciles: the resource and its field set."""
    fields = tuple(
        str(f["field"]) if isinstance(f, Mapping) else str(f)
        for f in entry.get("fields") or ()  # type: ignore[attr-defined]
    )
    return (
        str(entry.get("apiVersion", "")),
        str(entry.get("kind", "")),
        str(entry.get("namespace") or ""),
        str(entry.get("name", "")),
        fields,
    )


def _ref_identity(ref: api.ResourceRef) -> Identity:
    return (ref.api_version, ref.kind, ref.namespace or "", ref.name, ref.fields)


def _entry(
    ref: api.ResourceRef, seen: Observed, reference: str | None, field_refs: Mapping[str, str | None]
) -> bodies.ResourceHash:
    entry: bodies.ResourceHash = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
    if ref.namespace:
        entry["namespace"] = ref.namespace
    present = seen.present
    pairs = seen.fields if present else tuple((f, ABSENT) for f in ref.fields)
    entry["fields"] = [_field(f, h, field_refs.get(f)) for f, h in pairs]
    entry["hash"] = seen.hash if present and seen.hash else ABSENT
    if reference is not None:
        entry["lastTriggeredHash"] = reference
    entry["changed"] = bool(present and reference is not None and seen.hash != reference)
    entry["state"] = seen.state
    if seen.message and not present:
        entry["message"] = seen.message
    return entry


def _field(name: str, hash_: str, reference: str | None) -> bodies.FieldHash:
    field: bodies.FieldHash = {"field": name, "hash": hash_}
    if reference:
        field["lastTriggeredHash"] = reference
    return field


def _describe_change(ref: api.ResourceRef, entry: bodies.ResourceHash) -> str:
    moved = [f["field"] for f in entry["fields"] if f.get("hash") != f.get("lastTriggeredHash")]
    return f"{ref.describe()}:{'|'.join(moved) or '*'}"


def _hashes_moved(old: bodies.CtjStatus, entries: Sequence[bodies.ResourceHash]) -> bool:
    before = {identity(e): e.get("hash") for e in old.get("resourceHashes") or ()}
    return any(before.get(identity(e)) != e.get("hash") for e in entries)
