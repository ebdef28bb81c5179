"""Reconcile one CTJ: gather what is known of it, plan (``domain/plan.py``), execute the plan.

Level-triggered: the input is a key; everything else is read from memory (the CTJ store, the Job
index, the subscriptions' observed hashes), so any number of events collapse into one pass, and a
pass can be repeated (by a retry, a resync or another replica) without effect unless something
really changed. All API calls are the executor's (``runtime/executor.py``); when the key should
come back is the controller's to decide (``runtime/controller.py``), from the returned ``Result``
or the exception raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

from changejob.domain import api, bodies, plan
from changejob.kube import transport
from changejob.runtime import executor, stores, subscriptions
from changejob.runtime.controller import Result


class Specs:
    """Parsed specs by CTJ, parsed again only when the CTJ's uid or generation changes.

    What is kept has no Job template: one per CTJ would double the memory of 10 000 CTJs. The
    template is taken from the CTJ object at hand, of the same generation, so :meth:`get` always
    returns the whole spec of that object: the Job is built from it and from nothing else.
    """

    def __init__(self) -> None:
        self._items: dict[api.CtjKey, tuple[str, int, api.Spec | api.SpecError]] = {}

    def get(self, key: api.CtjKey, ctj: bodies.Ctj) -> api.Spec | api.SpecError:
        meta = ctj["metadata"]
        uid, generation = meta.get("uid", ""), int(meta.get("generation") or 0)
        cached = self._items.get(key)
        if cached is not None and cached[:2] == (uid, generation):
            parsed = cached[2]
        else:
            try:
                parsed = api.parse_spec(ctj.get("spec") or {})
            except api.SpecError as exc:
                parsed = exc
            kept = dataclasses.replace(parsed, job_template={}) if isinstance(parsed, api.Spec) else parsed
            self._items[key] = (uid, generation, kept)
        if isinstance(parsed, api.SpecError):
            return parsed
        return dataclasses.replace(parsed, job_template=(ctj.get("spec") or {})["jobTemplate"])

    def forget(self, key: api.CtjKey) -> None:
        self._items.pop(key, None)


class Reconciler:
    def __init__(
        self,
        *,
        ctjs: stores.CtjStore,
        job_index: stores.JobIndex,
        subscriptions_: subscriptions.Subscriptions,
        executor_: executor.Executor,
        owns: Callable[[api.CtjKey], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recheck_unknown_kinds: float = 30.0,
    ) -> None:
        self._ctjs = ctjs
        self._jobs = job_index
        self._subs = subscriptions_
        self._executor = executor_
        self._owns = owns
        self._clock = clock
        self._recheck = recheck_unknown_kinds
        self._specs = Specs()

    def reconcile(self, key: api.CtjKey) -> Result:
        """One pass over ``key``; raises what the controller should retry (a conflict: after a re-read)."""
        ctj = self._ctjs.get(key)
        if ctj is None or ctj["metadata"].get("deletionTimestamp") or not self._owns(key):
            self.forget(key)
            return Result()
        try:
            return self._reconcile(key, ctj)
        except transport.ApiError as exc:
            if exc.conflict:
                self._executor.refresh(key)
            raise
        finally:
            if not self._owns(key):
                # Its shard went to another replica while this reconcile ran (after the manager had
                # already forgotten it): drop what this reconcile may have subscribed to again.
                self.forget(key)

    def forget(self, key: api.CtjKey) -> None:
        self._subs.unsubscribe(key)
        self._specs.forget(key)

    def _reconcile(self, key: api.CtjKey, ctj: bodies.Ctj) -> Result:
        spec = self._specs.get(key, ctj)
        if isinstance(spec, api.SpecError):
            return self._invalid(key, ctj, spec.errors, requeue_after=None)
        resolved = self._executor.resolve(spec)
        if resolved.problems:
            return self._invalid(key, ctj, resolved.problems, requeue_after=self._recheck)  # a CRD may come later
        self._subs.subscribe(key, resolved.wanted)
        observed = self._subs.observed(key)
        if observed is None:
            return Result()  # a stream is still listing; it wakes us when synced
        now = self._clock()
        known = self._jobs.jobs_of(key)

        def planned(adopted: plan.Adopted | None = None) -> plan.Plan:
            return plan.plan(ctj=ctj, spec=spec, observed=observed, jobs_=known, now=now, adopted=adopted)

        first = planned()
        self._executor.execute(key, ctj, first, observed, planned)
        return Result(requeue_after=first.requeue_after)

    def _invalid(
        self, key: api.CtjKey, ctj: bodies.Ctj, problems: tuple[str, ...], *, requeue_after: float | None
    ) -> Result:
        self._subs.unsubscribe(key)
        self._executor.execute(key, ctj, plan.invalid(ctj=ctj, problems=problems, now=self._clock()), (), _never)
        return Result(requeue_after=requeue_after)


def _never(adopted: plan.Adopted) -> plan.Plan:
    raise AssertionError(f"an invalid spec plans no Job, so none can be adopted: {adopted}")
