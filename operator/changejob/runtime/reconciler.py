"""Reconcile one CTJ: compare observed hashes with the recorded ones, trigger, report status.

Level-triggered: the input is a key; everything else is read from the stores, so any number of
events collapse into one pass, and a pass can be repeated (by a retry, a resync or another replica)
without effect unless something really changed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from changejob.domain import api, conditions, jobs, triggers
from changejob.kube import discovery, transport, writes
from changejob.runtime import queue, registry, stores
from changejob.telemetry import metrics, tracing

log = logging.getLogger(__name__)
CtjKey = tuple[str, str]
ABSENT = "absent"
MAX_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """A resource of the spec, resolved (or not) through discovery."""

    ref: api.ResourceRef
    rtype: discovery.ResourceType | None
    problem: str = ""


def identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str, tuple[str, ...]]:
    fields = tuple(f["field"] if isinstance(f, Mapping) else str(f) for f in entry.get("fields") or ())
    return (
        entry.get("apiVersion", ""),
        entry.get("kind", ""),
        entry.get("namespace") or "",
        entry.get("name", ""),
        fields,
    )


def ref_identity(ref: api.ResourceRef) -> tuple[str, str, str, str, tuple[str, ...]]:
    return (ref.api_version, ref.kind, ref.namespace or "", ref.name, ref.fields)


class Reconciler:
    def __init__(
        self,
        *,
        ctjs: stores.CtjStore,
        job_index: stores.JobIndex,
        registry_: registry.Registry,
        discovery_: discovery.Discovery,
        writer: writes.Writer,
        work: queue.WorkQueue[CtjKey],
        may_act: Callable[[CtjKey], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recheck_unknown_kinds: float = 30.0,
    ) -> None:
        self._ctjs = ctjs
        self._jobs = job_index
        self._registry = registry_
        self._discovery = discovery_
        self._writer = writer
        self._queue = work
        self._may_act = may_act
        self._clock = clock
        self._recheck = recheck_unknown_kinds
        self._specs: dict[CtjKey, tuple[str, int, api.Spec | api.SpecError]] = {}
        # Jobs this process created lately: adopting one of them again (its status write failed and
        # the trigger is retried) is the same trigger, not one skipped in favour of another replica.
        self._created: collections.deque[str] = collections.deque(maxlen=4096)

    # ------------------------------------------------------------------------------------------------
    def reconcile(self, key: CtjKey) -> None:
        started = time.perf_counter()
        try:
            for _ in range(MAX_ATTEMPTS):
                try:
                    self._once(key)
                    return
                except transport.ApiError as exc:
                    if not exc.conflict:
                        raise
                    # Someone else wrote the CTJ: read it afresh and decide again.
                    fresh = self._writer.get(writes.ctj_path(*key))
                    if fresh is None:
                        self._ctjs.drop(key)
                    else:
                        self._ctjs.put(fresh)
            self._queue.add_after(key, 1.0)
        finally:
            if not self._may_act(key):
                # Its shard went to another replica while this reconcile ran (after the manager had
                # already forgotten it): drop what this reconcile may have subscribed to again.
                self.forget(key)
            metrics.reconcile_duration_seconds.observe(time.perf_counter() - started)

    def forget(self, key: CtjKey) -> None:
        self._registry.unsubscribe(key)
        self._specs.pop(key, None)
        self._queue.forget(key)

    def _spec(self, key: CtjKey, ctj: Mapping[str, Any]) -> api.Spec | api.SpecError:
        meta = ctj["metadata"]
        cached = self._specs.get(key)
        if cached and cached[0] == meta.get("uid") and cached[1] == meta.get("generation"):
            return cached[2]
        parsed: api.Spec | api.SpecError
        try:
            parsed = api.parse_spec(ctj.get("spec") or {})
        except api.SpecError as exc:
            parsed = exc
        # The cache keeps the parsed resources and settings, not the Job template: Jobs are built from
        # the CTJ object itself, and a template per CTJ would double the memory of 10 000 CTJs.
        kept = dataclasses.replace(parsed, job_template={}) if isinstance(parsed, api.Spec) else parsed
        self._specs[key] = (meta.get("uid", ""), meta.get("generation", 0), kept)
        return parsed

    def _once(self, key: CtjKey) -> None:
        ctj = self._ctjs.get(key)
        if ctj is None or ctj["metadata"].get("deletionTimestamp") or not self._may_act(key):
            self.forget(key)
            return
        spec = self._spec(key, ctj)
        if isinstance(spec, api.SpecError):
            self._registry.unsubscribe(key)
            self._invalid(ctj, list(spec.errors))
            return
        resolved = [self._resolve(i, ref) for i, ref in enumerate(spec.resources)]
        problems = [r.problem for r in resolved if r.problem]
        if problems:
            self._registry.unsubscribe(key)
            self._invalid(ctj, problems)
            self._queue.add_after(key, self._recheck)  # a CRD may be installed later
            return
        self._registry.subscribe(key, [(r.ref, r.rtype) for r in resolved if r.rtype is not None])
        observed = self._registry.observed(key)
        if observed is None:
            return  # a stream is still listing; it wakes us when synced
        self._evaluate(key, ctj, spec, observed)

    def _resolve(self, index: int, ref: api.ResourceRef) -> Resolved:
        where = f"spec.resources[{index}]"
        try:
            rtype = self._discovery.resolve(api_version=ref.api_version, kind=ref.kind)
        except transport.ApiError as exc:
            return Resolved(ref, None, f"{where}: cannot look up {ref.kind} ({ref.api_version}): {exc}")
        if rtype is None:
            return Resolved(ref, None, f"{where}: resource kind does not exist: {ref.kind} ({ref.api_version})")
        if rtype.namespaced and not ref.namespace:
            return Resolved(ref, rtype, f"{where}: namespace is required for namespaced resources")
        if not rtype.namespaced and ref.namespace:
            return Resolved(ref, rtype, f"{where}: namespace must not be set for cluster-scoped resources")
        return Resolved(ref, rtype)

    # ------------------------------------------------------------------------------------------------
    def _invalid(self, ctj: Mapping[str, Any], problems: list[str]) -> None:
        message = "; ".join(problems)
        status = dict(ctj.get("status") or {})
        now = self._clock()
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
        if self._write_status(ctj, status) and not (
            was and was.get("reason") == "InvalidSpec" and was.get("message") == message
        ):
            self._writer.event(ctj, type_="Warning", reason="InvalidSpec", message=message)
            log.warning("invalid spec: %s", message, extra={"ctj": _name(ctj)})

    def _evaluate(
        self, key: CtjKey, ctj: Mapping[str, Any], spec: api.Spec, observed: Sequence[registry.Observed]
    ) -> None:
        old = ctj.get("status") or {}
        now = self._clock()
        previous = {identity(e): e for e in old.get("resourceHashes") or ()}
        entries: list[dict[str, Any]] = []
        references: list[str] = []
        current: list[str | None] = []
        baselined: list[str] = []
        for ref, seen in zip(spec.resources, observed, strict=True):
            prev = previous.get(ref_identity(ref))
            reference = prev.get("lastTriggeredHash") if prev else None
            field_refs = {f["field"]: f.get("lastTriggeredHash") for f in (prev or {}).get("fields") or ()}
            if reference is None and seen.state == registry.PRESENT:
                reference = seen.hash  # baseline: first sight of this resource with these fields
                field_refs = dict(seen.fields)
                baselined.append(ref.describe())
            entries.append(_entry(ref, seen, reference, field_refs))
            references.append(reference or "")
            current.append(seen.hash if seen.state == registry.PRESENT and reference is not None else None)

        last = old.get("lastTriggeredTime")
        decision = triggers.decide(
            condition=spec.condition,
            cooldown=spec.cooldown,
            references=references,
            observed=current,
            last_triggered=conditions.parse_time(last) if last else None,
            now=now,
        )

        status: dict[str, Any] = {k: v for k, v in old.items() if k not in ("nextTriggerTime",)}
        status["resourceHashes"] = entries
        status["observedGeneration"] = int(ctj["metadata"].get("generation") or 0)
        status.setdefault("triggerCount", 0)
        events: list[tuple[str, str, str]] = []
        if baselined:
            events.append(("Normal", "BaselineRecorded", "recorded baseline of " + ", ".join(baselined)))

        span: Any = contextlib.nullcontext()
        if isinstance(decision, triggers.Trigger):
            if not self._may_act(key):
                return
            span = self._trigger_span(ctj, [observed[i] for i in decision.changed], decision.changed)
        with span:
            self._act(key, ctj, spec, old, status, entries, observed, decision, events, now)

    def _trigger_span(
        self, ctj: Mapping[str, Any], changed_obs: Sequence[registry.Observed], changed: Sequence[int]
    ) -> Any:
        """One trace per trigger: parented on the first change's watch span, others linked."""
        meta = ctj["metadata"]
        parent, links = _trace_origin(changed_obs)
        return tracing.tracer().start_as_current_span(
            "ctj.trigger",
            context=parent,
            links=links,
            attributes={
                "k8s.namespace.name": meta["namespace"],
                "changejob.ctj": meta["name"],
                "changejob.changed_resources": list(changed),
                "changejob.coalesced_changes": len(links),
            },
        )

    def _act(
        self,
        key: CtjKey,
        ctj: Mapping[str, Any],
        spec: api.Spec,
        old: Mapping[str, Any],
        status: dict[str, Any],
        entries: list[dict[str, Any]],
        observed: Sequence[registry.Observed],
        decision: triggers.Decision,
        events: list[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        if isinstance(decision, triggers.Trigger):
            self._trigger(ctj, spec, status, entries, observed, decision.changed, events, now)
        elif isinstance(decision, triggers.Defer):
            status["nextTriggerTime"] = precise_time(decision.until)
            if old.get("nextTriggerTime") != status["nextTriggerTime"]:
                metrics.triggers_total.labels(result="deferred").inc()
                events.append(
                    (
                        "Normal",
                        "TriggerDeferred",
                        f"change of {_changed_names(spec, decision.changed)} deferred by cooldown "
                        f"{api.format_duration(spec.cooldown)} until {status['nextTriggerTime']}",
                    )
                )
            elif _hashes_moved(old, entries):
                metrics.triggers_total.labels(result="coalesced").inc()
            self._queue.add_after(key, max(0.0, (decision.until - now).total_seconds()) + 0.05)

        self._set_conditions(ctj, spec, status, observed, decision, now)
        if self._may_act(key) and self._write_status(ctj, status):
            for type_, reason, message in events:
                self._writer.event(ctj, type_=type_, reason=reason, message=message)
            self._report_missing(ctj, old, entries)
            for i, (entry, seen) in enumerate(zip(entries, observed, strict=True)):
                if seen.origins and not entry["changed"]:
                    self._registry.covered(key, i, seen)
        self._prune(ctj, spec)

    # ------------------------------------------------------------------------------------------------
    def _trigger(
        self,
        ctj: Mapping[str, Any],
        spec: api.Spec,
        status: dict[str, Any],
        entries: list[dict[str, Any]],
        observed: Sequence[registry.Observed],
        changed: Sequence[int],
        events: list[tuple[str, str, str]],
        now: datetime,
    ) -> None:
        meta = ctj["metadata"]
        sequence = int(status.get("triggerCount") or 0) + 1
        described = []
        for i in changed:
            moved = [f["field"] for f in entries[i]["fields"] if f.get("hash") != f.get("lastTriggeredHash")]
            described.append(f"{spec.resources[i].describe()}:{'|'.join(moved) or '*'}")
        hashes = [e["hash"] for e in entries]
        span = trace.get_current_span()
        span.set_attribute("changejob.trigger.sequence", sequence)
        span.set_attribute("changejob.changed", described)
        body = jobs.build_job(
            ctj=ctj, sequence=sequence, changed=described, hashes=hashes, traceparent=tracing.traceparent()
        )
        name = body["metadata"]["name"]
        created_at = now
        try:
            job = self._writer.create_job(body)
            metrics.jobs_created_total.inc()
            metrics.triggers_total.labels(result="created").inc()
            earliest = min((o.changed_at for i, o in enumerate(observed) if i in changed and o.changed_at), default=0.0)
            if earliest:
                metrics.change_to_job_seconds.observe(max(0.0, time.monotonic() - earliest))
            self._jobs.record(job)
            self._created.append(f"{meta['namespace']}/{name}")
        except transport.ApiError as exc:
            if not exc.already_exists:
                span.record_exception(exc)
                raise
            job = self._writer.get(writes.job_path(meta["namespace"], name)) or {}
            owners = [o.get("uid") for o in job.get("metadata", {}).get("ownerReferences") or ()]
            if meta.get("uid") not in owners:
                raise
            # An earlier attempt (ours or another replica's) created it: adopt what it covered.
            if f"{meta['namespace']}/{name}" not in self._created:
                metrics.triggers_total.labels(result="skipped").inc()
            covered = (job["metadata"].get("annotations") or {}).get(jobs.HASHES_ANNOTATION, "")
            if len(covered.split(",")) == len(entries):
                hashes = covered.split(",")
            created_at = conditions.parse_time(job["metadata"]["creationTimestamp"])
        cover(entries, hashes)
        status.update(
            triggerCount=sequence,
            lastTriggeredTime=precise_time(created_at),
            lastJobName=name,
            lastJobStatus="Active",
        )
        status.pop("nextTriggerTime", None)
        events.append(("Normal", "ChangeDetected", "changed: " + ", ".join(described)))
        events.append(("Normal", "JobCreated", f"created job {name} (trigger {sequence})"))
        log.info("created job %s for trigger %d (%s)", name, sequence, ", ".join(described), extra={"ctj": _name(ctj)})

    def _set_conditions(
        self,
        ctj: Mapping[str, Any],
        spec: api.Spec,
        status: dict[str, Any],
        observed: Sequence[registry.Observed],
        decision: triggers.Decision,
        now: datetime,
    ) -> None:
        gen = int(ctj["metadata"].get("generation") or 0)
        job_name = status.get("lastJobName")
        if job_name:
            for info in self._jobs.jobs_of(stores.CtjStore.key_of(ctj)):
                if info.name == job_name:
                    status["lastJobStatus"] = info.phase
        missing = [
            f"{spec.resources[i].describe()}: {o.message or 'not found'}"
            for i, o in enumerate(observed)
            if o.state in (registry.MISSING, registry.FORBIDDEN, registry.UNKNOWN)
        ]
        forbidden = any(o.state == registry.FORBIDDEN for o in observed)
        conds = status.get("conditions") or []

        def put(type_: str, flag: bool, reason: str, message: str) -> None:
            nonlocal conds
            conds = conditions.set_condition(
                conds, type=type_, status=flag, reason=reason, message=message, now=now, observed_generation=gen
            )

        if missing:
            reason = "ResourceForbidden" if forbidden else "ResourceMissing"
            put("Ready", False, reason, "; ".join(missing))
            put("Degraded", True, reason, "; ".join(missing))
        else:
            put("Ready", True, "Reconciled", f"watching {len(observed)} resource(s)")
            put("Degraded", False, "AsExpected", "all watched resources are readable")
        put("Available", True, "Watching", f"watching {len(observed)} resource(s), condition {spec.condition}")
        if isinstance(decision, triggers.Defer):
            put(
                "Progressing",
                True,
                "CooldownDeferred",
                f"trigger deferred by cooldown until {status['nextTriggerTime']}",
            )
        elif status.get("lastJobStatus") == "Active" and job_name:
            put("Progressing", True, "JobActive", f"job {job_name} is running")
        else:
            put("Progressing", False, "Idle", "waiting for changes")
        status["conditions"] = conds

    def _write_status(self, ctj: Mapping[str, Any], status: dict[str, Any]) -> bool:
        """Write ``status`` if it differs; True when written (or equal). Conflicts propagate."""
        if status == (ctj.get("status") or {}):
            return True
        body = dict(ctj)
        body["status"] = status
        try:
            fresh = self._writer.update_status(body)
        except transport.ApiError as exc:
            metrics.status_writes_total.labels(result="conflict" if exc.conflict else "error").inc()
            if exc.not_found:
                return False
            raise
        metrics.status_writes_total.labels(result="ok").inc()
        self._ctjs.put(fresh)
        return True

    def _report_missing(
        self, ctj: Mapping[str, Any], old: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> None:
        before = {identity(e): e.get("state") for e in old.get("resourceHashes") or ()}
        for entry in entries:
            state = entry.get("state")
            if state in (registry.MISSING, registry.FORBIDDEN) and before.get(identity(entry)) != state:
                self._writer.event(
                    ctj, type_="Warning", reason=f"Resource{state}", message=entry.get("message") or state
                )

    def _prune(self, ctj: Mapping[str, Any], spec: api.Spec) -> None:
        key = stores.CtjStore.key_of(ctj)
        mine = [j for j in self._jobs.jobs_of(key) if j.owner_uid == ctj["metadata"].get("uid")]
        if len(mine) <= spec.history:
            return
        views = [
            {
                "metadata": {
                    "name": j.name,
                    "creationTimestamp": j.created,
                    "annotations": {jobs.TRIGGER_ANNOTATION: str(j.sequence)},
                },
                "status": _phase_status(j.phase),
            }
            for j in mine
        ]
        doomed = jobs.prune_plan(jobs=views, history=spec.history)
        if not doomed or not self._may_act(key):
            return
        for name in doomed:
            self._writer.delete_job(namespace=key[0], name=name)
        metrics.jobs_pruned_total.inc(len(doomed))
        self._writer.event(
            ctj,
            type_="Normal",
            reason="JobsPruned",
            message=f"deleted {len(doomed)} old job(s): {', '.join(sorted(doomed))}",
        )


def precise_time(moment: datetime) -> str:
    """RFC 3339 with microseconds: the cooldown is measured from this, so it must not be truncated."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cover(entries: Sequence[dict[str, Any]], hashes: Sequence[str]) -> None:
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


def _phase_status(phase: str) -> dict[str, Any]:
    if phase == "Succeeded":
        return {"conditions": [{"type": "Complete", "status": "True"}]}
    if phase == "Failed":
        return {"conditions": [{"type": "Failed", "status": "True"}]}
    return {}


def _entry(
    ref: api.ResourceRef, seen: registry.Observed, reference: str | None, field_refs: Mapping[str, str | None]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
    if ref.namespace:
        entry["namespace"] = ref.namespace
    present = seen.state == registry.PRESENT
    if present:
        entry["fields"] = [
            {"field": f, "hash": h, **({"lastTriggeredHash": field_refs[f]} if field_refs.get(f) else {})}
            for f, h in seen.fields
        ]
    else:
        entry["fields"] = [
            {"field": f, "hash": ABSENT, **({"lastTriggeredHash": field_refs[f]} if field_refs.get(f) else {})}
            for f in ref.fields
        ]
    entry["hash"] = seen.hash if present and seen.hash else ABSENT
    if reference is not None:
        entry["lastTriggeredHash"] = reference
    entry["changed"] = bool(present and reference is not None and seen.hash != reference)
    entry["state"] = seen.state
    if seen.message and not present:
        entry["message"] = seen.message
    return entry


def _changed_names(spec: api.Spec, changed: Sequence[int]) -> str:
    return ", ".join(spec.resources[i].describe() for i in changed)


def _hashes_moved(old: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> bool:
    before = {identity(e): e.get("hash") for e in old.get("resourceHashes") or ()}
    return any(before.get(identity(e)) != e.get("hash") for e in entries)


def _trace_origin(changed: Sequence[registry.Observed]) -> tuple[Any, list[trace.Link]]:
    """Parent the trigger span on the first change's watch span; link the others (coalesced)."""
    origins = sorted((o for seen in changed for o in seen.origins), key=lambda o: o[0])
    contexts = [ctx for _, ctx in origins if ctx is not None]
    if not contexts:
        return None, []
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
    return parent, [trace.Link(c) for c in contexts[1:]]


def _name(ctj: Mapping[str, Any]) -> str:
    return f"{ctj['metadata']['namespace']}/{ctj['metadata']['name']}"
