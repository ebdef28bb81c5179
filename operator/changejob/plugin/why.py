"""The account ``kubectl changejob why NAME`` prints, built from a CTJ and its Jobs.

Pure: no I/O and no clock (``now`` is passed in), so every state a CTJ can be in is a unit test on
plain dicts (tests/unit/test_plugin_why.py). It reads only what the operator writes to status and
what the user wrote to spec; a field an older operator or CRD does not have yet (``spec.suspend``,
``spec.concurrencyPolicy``, ``status.lastTriggerRequest``, the ``Stalled``/``Reconciling`` conditions,
selector resources) is simply not mentioned. That is also why objects are read as plain mappings
rather than as ``domain/bodies.py``'s TypedDicts: those describe what this version writes, the
plugin must also read what a newer or older operator wrote.

The text has four parts: a summary, the watched resources (state, matched objects for a selector,
the fields changed since the last trigger), what the CTJ is waiting for, and its newest Jobs.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final

from changejob.domain import api, conditions, jobs

__all__ = ["JOBS_SHOWN", "TRIGGER_REQUEST_ANNOTATION", "explain", "human_duration", "selector_text"]

TRIGGER_REQUEST_ANNOTATION: Final = "changejob.dev/trigger-request"
"""Set on a CTJ to ask for one Job now; the operator records the handled value in
``status.lastTriggerRequest`` and copies it onto the Job it creates."""

JOBS_SHOWN: Final = 10
"""At most this many Jobs are listed (newest first); ``history`` normally keeps fewer."""

CHANGED_SHOWN: Final = 100
"""A Job's ``changejob.dev/changed`` annotation is cut to this many characters in the list."""

_MATCHED_KEYS: Final = ("matchedCount", "matched", "matchedObjects")
"""Where a status entry of a selector resource may carry the number of matched objects; the first
integer found is shown."""

_EXPLAINED: Final = frozenset({"CooldownDeferred", "WaitingForActiveJob", "Suspended", "JobActive"})
"""Reasons of a ``Reconciling`` condition that the account already explains in its own words."""

_ABSENT: Final = "absent"
_PRESENT: Final = "Present"


@dataclasses.dataclass(frozen=True, slots=True)
class _Resource:
    """One watched resource as spec names it, and its status entry (None: not observed yet)."""

    label: str
    spec: Mapping[str, Any]
    entry: Mapping[str, Any] | None

    @property
    def state(self) -> str:
        return str((self.entry or {}).get("state") or ("Unknown" if self.entry is None else _PRESENT))

    def changed_fields(self) -> list[str]:
        """The fields whose hash moved since the last trigger, each marked when it appeared or vanished."""
        found = []
        for item in (self.entry or {}).get("fields") or ():
            now, then = item.get("hash"), item.get("lastTriggeredHash")
            if not then or now == then:
                continue
            name = str(item.get("field") or "?")
            if then == _ABSENT:
                name += " (appeared)"
            elif now == _ABSENT:
                name += " (gone)"
            found.append(name)
        return found

    @property
    def has_reference(self) -> bool:
        return bool((self.entry or {}).get("lastTriggeredHash"))

    @property
    def changed(self) -> bool:
        entry = self.entry or {}
        if "changed" in entry:
            return bool(entry["changed"])
        return bool(self.changed_fields())

    @property
    def pending(self) -> bool:
        """Present and changed since the last trigger: a change the next Job will cover."""
        return self.state == _PRESENT and self.has_reference and self.changed

    def matched(self) -> int | None:
        for key in _MATCHED_KEYS:
            value = (self.entry or {}).get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None


# --------------------------------------------------------------------------------------------------
# Small texts


def human_duration(value: datetime.timedelta) -> str:
    """A short, rounded duration as kubectl prints ages: ``42s``, ``5m30s``, ``45m``, ``5h30m``, ``3d5h``."""
    seconds = max(0, int(value.total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _when(text: object, now: datetime.datetime) -> str:
    """``T (5m ago)`` or ``T (in 42s)``; the text as it is when it is no time."""
    if not isinstance(text, str) or not text:
        return "?"
    try:
        moment = conditions.parse_time(text)
    except ValueError:
        return text
    delta = moment - now
    if delta.total_seconds() >= 1:
        return f"{text} (in {human_duration(delta)})"
    return f"{text} ({human_duration(-delta)} ago)"


def selector_text(selector: object) -> str:
    """A metav1.LabelSelector as kubectl writes one: ``app=web,tier in (a,b),!canary,track``."""
    if not isinstance(selector, Mapping):
        return "?"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        if not isinstance(expression, Mapping):
            continue
        key, operator = expression.get("key", "?"), expression.get("operator", "?")
        values = ",".join(str(v) for v in expression.get("values") or ())
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {operator} ({values})")
    return ",".join(parts) or "(everything)"


def _resource_label(spec: Mapping[str, Any]) -> str:
    kind, namespace = spec.get("kind", "?"), spec.get("namespace")
    if "selector" in spec and not spec.get("name"):
        where = f" in {namespace}" if namespace else ""
        return f"{kind}{where} [{selector_text(spec.get('selector'))}]"
    return f"{kind} {namespace}/{spec.get('name', '?')}" if namespace else f"{kind} {spec.get('name', '?')}"


def _identity(item: Mapping[str, Any]) -> tuple[object, ...]:
    return (item.get("apiVersion"), item.get("kind"), item.get("namespace") or "", item.get("name") or "")


def _resources(ctj: Mapping[str, Any]) -> list[_Resource]:
    """Spec resources paired with their status entries: by identity, or for a selector (no name) the
    entry at the same position if it is of the same kind and namespace."""
    specs = [r for r in ((ctj.get("spec") or {}).get("resources") or ()) if isinstance(r, Mapping)]
    entries = [e for e in ((ctj.get("status") or {}).get("resourceHashes") or ()) if isinstance(e, Mapping)]
    by_identity = {_identity(e): e for e in entries if e.get("name")}
    paired = []
    for index, spec in enumerate(specs):
        entry: Mapping[str, Any] | None = None
        if spec.get("name"):
            entry = by_identity.get(_identity(spec))
        elif index < len(entries) and not entries[index].get("name"):
            same_kind = _identity(entries[index])[:3] == _identity(spec)[:3]
            entry = entries[index] if same_kind else None
        paired.append(_Resource(label=_resource_label(spec), spec=spec, entry=entry))
    return paired


def _condition(ctj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return conditions.get_condition((ctj.get("status") or {}).get("conditions"), type_) or {}


def _is_true(condition: Mapping[str, Any]) -> bool:
    return condition.get("status") == "True"


# --------------------------------------------------------------------------------------------------
# The parts


def _summary(ctj: Mapping[str, Any], now: datetime.datetime) -> list[str]:
    metadata, spec, status = ctj.get("metadata") or {}, ctj.get("spec") or {}, ctj.get("status") or {}
    settings = [
        f"condition {spec.get('condition') or api.DEFAULT_CONDITION}",
        f"cooldown {spec.get('cooldown') or api.format_duration(api.DEFAULT_COOLDOWN)}",
        f"history {spec.get('history') or api.DEFAULT_HISTORY}",
    ]
    if spec.get("concurrencyPolicy"):
        settings.append(f"concurrencyPolicy {spec['concurrencyPolicy']}")
    if spec.get("changeContext"):
        settings.append(f"changeContext {spec['changeContext']}")
    if spec.get("suspend") is True:
        settings.append("suspended")
    lines = [f"{api.KIND} {metadata.get('namespace', '?')}/{metadata.get('name', '?')}: {', '.join(settings)}"]
    ready = _condition(ctj, "Ready")
    if ready:
        text = f"Ready: {ready.get('status', 'Unknown')} ({ready.get('reason', '?')})"
        if ready.get("message"):
            text += f" {ready['message']}"
        lines.append(text)
    count = status.get("triggerCount")
    if status.get("lastJobName") or count:
        last = f"Last trigger: #{count or '?'} {_when(status.get('lastTriggeredTime'), now)}"
        if status.get("lastJobName"):
            last += f", Job {status['lastJobName']}"
            if status.get("lastJobStatus"):
                last += f" {status['lastJobStatus']}"
        lines.append(last)
    else:
        lines.append("Last trigger: none yet")
    return lines


def _resource_lines(resources: Sequence[_Resource], *, invalid: bool) -> list[str]:
    if not resources:
        return ["Resources: none in spec"]
    width = max(len(r.label) for r in resources)
    unobserved = "not watched: the spec is invalid" if invalid else "not observed yet"
    lines = ["Resources:"]
    for r in resources:
        if r.entry is None:
            lines.append(f"  {r.label.ljust(width)}  {unobserved}")
            continue
        details = []
        matched = r.matched()
        if matched is not None:
            details.append(f"{matched} object{'s' if matched != 1 else ''} matched")
        if r.state != _PRESENT:
            details.append(str(r.entry.get("message") or "").strip() or "no message")
        elif not r.has_reference:
            details.append("no reference yet (the first observation sets it, without a Job)")
        elif r.changed:
            fields = r.changed_fields()
            details.append("changed since the last trigger" + (f": {', '.join(fields)}" if fields else ""))
        else:
            details.append("unchanged since the last trigger")
        lines.append(f"  {r.label.ljust(width)}  {r.state.ljust(9)}  {'; '.join(details)}")
    return lines


def _waiting(ctj: Mapping[str, Any], resources: Sequence[_Resource], now: datetime.datetime) -> list[str]:
    """What has to happen before the next Job, most decisive first."""
    metadata, spec, status = ctj.get("metadata") or {}, ctj.get("spec") or {}, ctj.get("status") or {}
    name, namespace = metadata.get("name", "NAME"), metadata.get("namespace", "NAMESPACE")
    where = f"{name} -n {namespace}"
    generation, observed = int(metadata.get("generation") or 0), int(status.get("observedGeneration") or 0)
    if not status.get("conditions"):
        return [
            f"the operator to write a first status (none yet): is kube-changejob running and serving namespace "
            f"{namespace}?"
        ]
    items = []
    if observed < generation:
        items.append(
            f"the operator to observe generation {generation} of the spec (status describes generation "
            f"{observed}; what follows may be out of date)"
        )
    stalled, progressing = _condition(ctj, "Stalled"), _condition(ctj, "Progressing")
    invalid = _invalid(ctj)
    if _is_true(stalled):
        items.append(f"a fix: stalled ({stalled.get('reason', '?')}): {stalled.get('message') or 'no message'}")
    elif invalid:
        items.append(
            f"a fix of the spec: it is invalid: {invalid.get('message') or 'no message'} "
            f"(kubectl edit changetriggeredjob {where})"
        )
    if items and (_is_true(stalled) or invalid):
        return items  # nothing else can happen until the spec is fixed
    items += _manual_request(ctj, spec=spec, status=status)
    changed = [r for r in resources if r.pending]
    items += _deferrals(spec, status, progressing=progressing, changed=changed, where=where, now=now)
    items += _condition_items(spec, resources, changed=changed, deferred=bool(items))
    items += _resource_problems(resources)
    reconciling = _condition(ctj, "Reconciling")
    if _is_true(reconciling) and reconciling.get("reason") not in _EXPLAINED:
        detail = f": {reconciling['message']}" if reconciling.get("message") else ""
        items.insert(0, f"the operator to finish reconciling ({reconciling.get('reason', '?')}){detail}")
    return items


def _deferrals(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    progressing: Mapping[str, Any],
    changed: Sequence[_Resource],
    where: str,
    now: datetime.datetime,
) -> list[str]:
    """Why changes already made have not triggered yet: suspension, an active Job, the cooldown."""
    items = []
    if spec.get("suspend") is True or progressing.get("reason") == "Suspended":
        pending = (
            f"{len(changed)} resource(s) changed since the last trigger; they trigger one Job on resume"
            if changed
            else "nothing changed since the last trigger so far"
        )
        items.append(
            f"resume: suspended, so no Job is created; changes are still recorded ({pending}): "
            f"kubectl changejob resume {where}"
        )
    if progressing.get("reason") == "WaitingForActiveJob":
        job = status.get("lastJobName") or "the last Job"
        items.append(
            f"Job {job} to finish (concurrencyPolicy Forbid): then one Job covers every change made meanwhile"
            + (f"; {progressing['message']}" if progressing.get("message") else "")
        )
    if status.get("nextTriggerTime") or progressing.get("reason") == "CooldownDeferred":
        cooldown = spec.get("cooldown") or api.format_duration(api.DEFAULT_COOLDOWN)
        items.append(
            f"the cooldown ({cooldown}) to end: the deferred trigger fires at "
            f"{_when(status.get('nextTriggerTime'), now)} and covers every change until then"
        )
    return items


def _invalid(ctj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The condition that says the spec is invalid, or {}."""
    for type_ in ("Ready", "Degraded", "Stalled"):
        found = _condition(ctj, type_)
        if found.get("reason") == "InvalidSpec":
            return found
    return {}


def _manual_request(ctj: Mapping[str, Any], *, spec: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    requested = ((ctj.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_REQUEST_ANNOTATION)
    handled = status.get("lastTriggerRequest")
    if not requested or requested == handled:
        return []
    later = "; while suspended it is handled on resume" if spec.get("suspend") is True else ""
    return [
        f"the operator to handle trigger request {requested} (status.lastTriggerRequest: {handled or 'unset'}){later}"
    ]


def _condition_items(
    spec: Mapping[str, Any], resources: Sequence[_Resource], *, changed: Sequence[_Resource], deferred: bool
) -> list[str]:
    """What the Any/All condition still needs; empty when a deferral above already explains the wait."""
    if spec.get("condition") == "All":
        unchanged = [r for r in resources if not r.pending]
        if not unchanged:
            return [] if deferred else ["the operator to act on the changes of every resource (condition All is met)"]
        missing = ", ".join(r.label for r in unchanged)
        if changed:
            return [
                f"a change of {missing} (condition All: every resource must change since the last trigger; "
                f"changed so far: {', '.join(r.label for r in changed)})"
            ]
        return ["a change of every resource (condition All): none has changed since the last trigger"]
    if changed:
        return [] if deferred else [f"the operator to act on the change of {', '.join(r.label for r in changed)}"]
    if deferred or not any(r.state == _PRESENT for r in resources):
        return []  # explained above, or by the resources' problems below
    return ["a change of any watched resource (condition Any): nothing has changed since the last trigger"]


def _resource_problems(resources: Sequence[_Resource]) -> list[str]:
    items = []
    for r in resources:
        message = str((r.entry or {}).get("message") or "").strip()
        detail = f": {message}" if message else ""
        if r.entry is None:
            items.append(f"the operator to observe {r.label}")
        elif r.state == "Missing":
            items.append(f"{r.label} to exist{detail}")
        elif r.state == "Forbidden":
            items.append(f"the operator to be allowed to read {r.label}{detail}")
        elif r.state != _PRESENT:
            items.append(f"{r.label} to be readable ({r.state}){detail}")
    return items


def _job_lines(
    ctj: Mapping[str, Any], found: Sequence[Mapping[str, Any]] | None, error: str | None, now: datetime.datetime
) -> list[str]:
    if found is None:
        return [f"Jobs: not listed ({error or 'unknown error'})"]
    name = (ctj.get("metadata") or {}).get("name", "?")
    if not found:
        return [f"Jobs: none (label {jobs.OWNER_LABEL}={name})"]

    def sequence(job: Mapping[str, Any]) -> tuple[int, str]:
        metadata = job.get("metadata") or {}
        try:
            number = int((metadata.get("annotations") or {}).get(jobs.TRIGGER_ANNOTATION, -1))
        except (TypeError, ValueError):
            number = -1
        return number, str(metadata.get("creationTimestamp") or "")

    newest = sorted(found, key=sequence, reverse=True)
    shown = newest[:JOBS_SHOWN]
    header = f"Jobs (newest first{f', {len(shown)} of {len(newest)}' if len(newest) > len(shown) else ''}):"
    rows = []
    for job in shown:
        metadata = job.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        number = sequence(job)[0]
        changed = str(annotations.get(jobs.CHANGED_ANNOTATION) or "")
        if annotations.get(TRIGGER_REQUEST_ANNOTATION) and changed != "manual":
            changed = f"manual ({annotations[TRIGGER_REQUEST_ANNOTATION]})" + (f", {changed}" if changed else "")
        if len(changed) > CHANGED_SHOWN:
            changed = changed[: CHANGED_SHOWN - 3] + "..."
        age = _age(metadata.get("creationTimestamp"), now)
        rows.append(
            (f"#{number}" if number >= 0 else "#?", str(metadata.get("name", "?")), jobs.job_phase(job), age, changed)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [header]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append(f"  {cells[0]}  {cells[1]}  {cells[2]}  {cells[3]} ago  {row[4] or '-'}".rstrip())
    return lines


def _age(value: object, now: datetime.datetime) -> str:
    if not isinstance(value, str):
        return "?"
    try:
        return human_duration(now - conditions.parse_time(value))
    except ValueError:
        return "?"


# --------------------------------------------------------------------------------------------------
# The account


def explain(
    ctj: Mapping[str, Any],
    found_jobs: Sequence[Mapping[str, Any]] | None,
    *,
    now: datetime.datetime,
    jobs_error: str | None = None,
) -> str:
    """The whole account of one CTJ; ``found_jobs`` None means they could not be listed (``jobs_error``)."""
    resources = _resources(ctj)
    waiting = _waiting(ctj, resources, now)
    parts = [
        "\n".join(_summary(ctj, now)),
        "\n".join(_resource_lines(resources, invalid=bool(_invalid(ctj)))),
        "\n".join(["Waiting for:", *(f"  - {item}" for item in waiting)] if waiting else ["Waiting for: nothing"]),
        "\n".join(_job_lines(ctj, found_jobs, jobs_error, now)),
    ]
    return "\n\n".join(parts) + "\n"
