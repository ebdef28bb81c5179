"""The reconciler's API calls: resolve kinds, carry out a ``plan.Plan``, re-read a CTJ after a conflict.

Every write (Job create, status, Events, Job deletes) passes :meth:`Executor._fence` to the writer,
which asks it right before sending: ``may_act`` for the CTJ is checked there, once per write, and
nowhere else. A trigger is one trace (``ctj.trigger``, parented on the watch event of the first
change, the other changes linked), spanning the Job create, the status write and the pruning.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace

from changejob.domain import api, bodies, jobs, plan
from changejob.domain.observed import Observed
from changejob.kube import discovery, resources, transport, writes
from changejob.runtime import stores, subscriptions
from changejob.telemetry import metrics, tracing

log = logging.getLogger(__name__)
Replan = Callable[[plan.Adopted], plan.Plan]


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """The resources of a spec resolved through discovery, or why some cannot be."""

    wanted: subscriptions.Wanted
    problems: tuple[str, ...] = ()


class Executor:
    def __init__(
        self,
        *,
        writer: writes.Writer,
        discovery_: discovery.Discovery,
        ctjs: stores.CtjStore,
        job_index: stores.JobIndex,
        subscriptions_: subscriptions.Subscriptions,
        may_act: Callable[[api.CtjKey], bool],
    ) -> None:
        self._writer = writer
        self._discovery = discovery_
        self._ctjs = ctjs
        self._jobs = job_index
        self._subs = subscriptions_
        self._may_act = may_act
        # Jobs this process created lately: adopting one of them again (its status write failed and
        # the trigger is retried) is the same trigger, not one skipped in favour of another replica.
        self._created: collections.deque[str] = collections.deque(maxlen=4096)

    def _fence(self, key: api.CtjKey) -> writes.Fence:
        return lambda: self._may_act(key)

    # --- reads ------------------------------------------------------------------------------------
    def resolve(self, spec: api.Spec) -> Resolved:
        """Each resource's REST type; a kind not served, or a namespace that does not fit, is a problem."""
        wanted: subscriptions.Wanted = []
        problems: list[str] = []
        for index, ref in enumerate(spec.resources):
            where = f"spec.resources[{index}]"
            try:
                rtype = self._discovery.resolve(api_version=ref.api_version, kind=ref.kind)
            except transport.ApiError as exc:
                problems.append(f"{where}: cannot look up {ref.kind} ({ref.api_version}): {exc}")
                continue
            if rtype is None:
                problems.append(f"{where}: resource kind does not exist: {ref.kind} ({ref.api_version})")
            elif rtype.namespaced and not ref.namespace:
                problems.append(f"{where}: namespace is required for namespaced resources")
            elif not rtype.namespaced and ref.namespace:
                problems.append(f"{where}: namespace must not be set for cluster-scoped resources")
            else:
                wanted.append((ref, rtype))
        return Resolved(wanted=wanted, problems=tuple(problems))

    def refresh(self, key: api.CtjKey) -> None:
        """Someone else wrote the CTJ: read it afresh into the store (or drop it if it is gone)."""
        fresh = self._writer.get(resources.CTJ.path(*key))
        if fresh is None:
            self._ctjs.drop(key)
        else:
            self._ctjs.put(fresh)

    # --- writes -----------------------------------------------------------------------------------
    def execute(
        self, key: api.CtjKey, ctj: bodies.Ctj, planned: plan.Plan, observed: Sequence[Observed], replan: Replan
    ) -> None:
        """Carry out ``planned`` (the order is :class:`plan.Plan`'s)."""
        with self._trigger_span(ctj, planned, observed):
            if planned.outcome:
                metrics.triggers_total.labels(result=planned.outcome).inc()
            if planned.job is not None:
                planned = self._create(key, ctj, planned, observed, replan)
            if self._write_status(key, ctj, planned.status):
                self._written(key, ctj, planned, observed)
            self._prune(key, ctj, planned)

    def _create(
        self, key: api.CtjKey, ctj: bodies.Ctj, planned: plan.Plan, observed: Sequence[Observed], replan: Replan
    ) -> plan.Plan:
        """Create the plan's Job; if it exists already, adopt it (and plan again with what it covered)."""
        assert planned.job is not None
        new = planned.job
        span = trace.get_current_span()
        span.set_attribute("changejob.trigger.sequence", new.sequence)
        span.set_attribute("changejob.changed", list(new.described))
        body = jobs.with_traceparent(new.body, tracing.traceparent())
        try:
            created = self._writer.create_job(body, fence=self._fence(key))
        except transport.ApiError as exc:
            if not exc.already_exists:
                span.record_exception(exc)
                raise
            return self._adopt(key, ctj, new, exc, replan)
        metrics.jobs_created_total.inc()
        metrics.triggers_total.labels(result="created").inc()
        earliest = min((observed[i].changed_at for i in new.changed if observed[i].changed_at), default=0.0)
        if earliest:
            metrics.change_to_job_seconds.observe(max(0.0, time.monotonic() - earliest))
        self._jobs.record(created)
        self._created.append(f"{key[0]}/{new.name}")
        self._log_created(key, new)
        return planned

    def _adopt(
        self, key: api.CtjKey, ctj: bodies.Ctj, new: plan.NewJob, exc: transport.ApiError, replan: Replan
    ) -> plan.Plan:
        """An earlier attempt (ours or another replica's) created this trigger's Job: adopt what it covered."""
        found = self._writer.get(resources.JOB.path(key[0], new.name))
        if found is None or not jobs.owned_by(found, ctj["metadata"].get("uid", "")):
            raise exc
        if f"{key[0]}/{new.name}" not in self._created:
            metrics.triggers_total.labels(result="skipped").inc()
        self._log_created(key, new)
        return replan(plan.Adopted(job=jobs.view(found), hashes=jobs.covered_hashes(found)))

    def _write_status(self, key: api.CtjKey, ctj: bodies.Ctj, status: bodies.CtjStatus) -> bool:
        """Write ``status`` if it differs; True when written (or equal). Conflicts propagate."""
        if status == (ctj.get("status") or {}):
            return True
        body: bodies.Ctj = {**ctj, "status": status}
        try:
            fresh = self._writer.update_status(body, fence=self._fence(key))
        except transport.ApiError as exc:
            metrics.status_writes_total.labels(result="conflict" if exc.conflict else "error").inc()
            if exc.not_found:
                return False
            raise
        metrics.status_writes_total.labels(result="ok").inc()
        self._ctjs.put(fresh)
        return True

    def _written(self, key: api.CtjKey, ctj: bodies.Ctj, planned: plan.Plan, observed: Sequence[Observed]) -> None:
        """After a successful status write: its Events, and the changes it accounts for are forgotten."""
        for event in planned.events:
            self._event(key, ctj, event)
            if event.reason == "InvalidSpec":
                log.warning("invalid spec: %s", event.message, extra={"ctj": f"{key[0]}/{key[1]}"})
        for i in planned.settled:
            if observed[i].origins:
                self._subs.covered(key, i, observed[i])

    def _prune(self, key: api.CtjKey, ctj: bodies.Ctj, planned: plan.Plan) -> None:
        for name in planned.prune:
            self._writer.delete_job(namespace=key[0], name=name, fence=self._fence(key))
        if planned.pruned_event is not None:
            metrics.jobs_pruned_total.inc(len(planned.prune))
            self._event(key, ctj, planned.pruned_event)

    def _event(self, key: api.CtjKey, ctj: bodies.Ctj, event: plan.Event) -> None:
        self._writer.event(
            ctj["metadata"], type_=event.type, reason=event.reason, message=event.message, fence=self._fence(key)
        )

    # --- tracing and logs -------------------------------------------------------------------------
    def _trigger_span(self, ctj: bodies.Ctj, planned: plan.Plan, observed: Sequence[Observed]) -> Any:
        """One trace per trigger: parented on the first change's watch span, the others linked."""
        if planned.job is None:
            return contextlib.nullcontext()
        meta = ctj["metadata"]
        changed = planned.job.changed
        parent, links = _trace_origin([observed[i] for i in changed])
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

    def _log_created(self, key: api.CtjKey, new: plan.NewJob) -> None:
        log.info(
            "created job %s for trigger %d (%s)",
            new.name,
            new.sequence,
            ", ".join(new.described),
            extra={"ctj": f"{key[0]}/{key[1]}"},
        )


def _trace_origin(changed: Sequence[Observed]) -> tuple[Any, list[trace.Link]]:
    """Parent the trigger span on the first change's watch span; link the others (coalesced)."""
    origins = sorted((o for seen in changed for o in seen.origins), key=lambda o: o[0])
    contexts = [ctx for _, ctx in origins if ctx is not None]
    if not contexts:
        return None, []
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
    return parent, [trace.Link(c) for c in contexts[1:]]
