"""The planner: every decision a reconcile can take, from plain data, with no cluster and no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from changejob.domain import api, bodies, conditions, hashing, jobs, plan, triggers
from changejob.domain.observed import FORBIDDEN, MISSING, PRESENT, UNKNOWN, Observed

pytestmark = pytest.mark.unit

NS = "team-a"
UID = "0d9f6c1e-1111-2222-3333-444455556666"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DATA = hashing.ObjectHasher(fields=("data",))


def ctj(*names: str, status: bodies.CtjStatus | None = None, **spec: Any) -> bodies.Ctj:
    body: bodies.Ctj = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "nightly", "namespace": NS, "uid": UID, "generation": 3, "resourceVersion": "7"},
        "spec": {
            "resources": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": n, "namespace": NS, "fields": ["data"]} for n in names
            ],
            "cooldown": "0s",
            "jobTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {
                    "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}
                },
            },
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def seen(value: str) -> Observed:
    return Observed(state=PRESENT, names=DATA.fields, digests=DATA.digests({"data": {"k": value}}))


def hash_of(value: str) -> str:
    found = seen(value).hash
    assert found is not None
    return found


def planned(
    body: bodies.Ctj, *observed: Observed, jobs_: list[jobs.JobView] | None = None, now: datetime = NOW, **kw: Any
) -> plan.Plan:
    spec = api.parse_spec(body["spec"])
    return plan.plan(ctj=body, spec=spec, observed=list(observed), jobs_=jobs_ or [], now=now, **kw)


def after(body: bodies.Ctj, result: plan.Plan) -> bodies.Ctj:
    """``body`` as stored once ``result``'s status is written."""
    return {**body, "status": result.status}


def condition(result: plan.Plan, type_: str) -> tuple[str, str]:
    found = conditions.get_condition(result.status.get("conditions"), type_)
    assert found is not None
    return found.get("status", ""), found.get("reason", "")


def reasons(result: plan.Plan) -> list[str]:
    return [e.reason for e in result.events]


# --- baseline and nothing ---------------------------------------------------------------------------


def test_first_sight_records_a_baseline_and_decides_nothing() -> None:
    result = planned(ctj("cfg"), seen("v1"))
    assert result.decision == triggers.Nothing(triggers.UNCHANGED)
    assert result.job is None and result.requeue_after is None and result.prune == ()
    (entry,) = result.status["resourceHashes"]
    assert entry["hash"] == entry["lastTriggeredHash"] == hash_of("v1")
    assert entry["fields"] == [
        {"field": "data", "hash": seen("v1").fields[0][1], "lastTriggeredHash": seen("v1").fields[0][1]}
    ]
    assert (entry["changed"], entry["state"]) == (False, PRESENT)
    assert result.status["triggerCount"] == 0 and result.status["observedGeneration"] == 3
    assert result.events == (plan.Event("Normal", "BaselineRecorded", f"recorded baseline of ConfigMap/{NS}/cfg"),)
    assert condition(result, "Ready") == ("True", "Reconciled")
    assert condition(result, "Progressing") == ("False", "Idle")
    assert result.settled == (0,)


def test_nothing_changed_plans_the_status_already_recorded() -> None:
    first = planned(ctj("cfg"), seen("v1"))
    again = planned(after(ctj("cfg"), first), seen("v1"), now=NOW + timedelta(minutes=5))
    assert again.status == first.status  # so no write, no Event
    assert again.events == () and again.decision == triggers.Nothing(triggers.UNCHANGED)


# --- trigger -------------------------------------------------------------------------------------------


def test_a_change_triggers_one_job_that_covers_it() -> None:
    body = after(ctj("cfg", "other"), planned(ctj("cfg", "other"), seen("v1"), seen("o1")))
    result = planned(body, seen("v2"), seen("o1"))
    assert result.decision == triggers.Trigger((0,))
    assert result.job is not None
    name = jobs.job_name(ctj_name="nightly", ctj_uid=UID, sequence=1)
    assert (result.job.name, result.job.sequence, result.job.changed) == (name, 1, (0,))
    annotations = result.job.body["metadata"]["annotations"]
    assert annotations[jobs.CHANGED_ANNOTATION] == f"ConfigMap/{NS}/cfg:data"
    assert annotations[jobs.HASHES_ANNOTATION] == f"{hash_of('v2')},{hash_of('o1')}"
    assert result.job.body["metadata"]["labels"] == {"team": "a", jobs.OWNER_LABEL: "nightly"}
    status = result.status
    assert (status["triggerCount"], status["lastJobName"], status["lastJobStatus"]) == (1, name, "Active")
    assert status["lastTriggeredTime"] == "2026-03-01T12:00:00.123456Z"
    assert [e["lastTriggeredHash"] for e in status["resourceHashes"]] == [hash_of("v2"), hash_of("o1")]
    assert not any(e["changed"] for e in status["resourceHashes"])
    assert reasons(result) == ["ChangeDetected", "JobCreated"]
    assert condition(result, "Progressing") == ("True", "JobActive")
    assert result.settled == (0, 1)


def test_condition_all_waits_for_every_resource() -> None:
    body = ctj("a", "b", condition="All")
    body = after(body, planned(body, seen("a1"), seen("b1")))
    waiting = planned(body, seen("a2"), seen("b1"))
    assert waiting.decision == triggers.Nothing(triggers.WAITING_FOR_ALL) and waiting.job is None
    assert waiting.status["resourceHashes"][0]["changed"] is True
    assert waiting.settled == (1,)  # the change of a is still pending
    both = planned(after(body, waiting), seen("a2"), seen("b2"))
    assert both.decision == triggers.Trigger((0, 1)) and both.job is not None


# --- defer -------------------------------------------------------------------------------------------


def test_a_change_inside_the_cooldown_is_deferred_then_coalesced() -> None:
    body = ctj("cfg", cooldown="60s")
    body = after(body, planned(body, seen("v1")))
    body["status"]["lastTriggeredTime"] = conditions.precise_time(NOW - timedelta(seconds=10))
    deferred = planned(body, seen("v2"))
    until = NOW + timedelta(seconds=50)
    assert deferred.decision == triggers.Defer(until=until, changed=(0,))
    assert deferred.job is None and deferred.outcome == "deferred"
    assert deferred.requeue_after == pytest.approx(50.0 + plan.DEFER_SLACK)
    assert deferred.status["nextTriggerTime"] == conditions.precise_time(until)
    assert deferred.events == (
        plan.Event(
            "Normal",
            "TriggerDeferred",
            f"change of ConfigMap/{NS}/cfg deferred by cooldown 1m0s until {conditions.precise_time(until)}",
        ),
    )
    assert condition(deferred, "Progressing") == ("True", "CooldownDeferred")
    later = NOW + timedelta(seconds=5)
    coalesced = planned(after(body, deferred), seen("v3"), now=later)
    assert (coalesced.outcome, coalesced.events) == ("coalesced", ())
    assert planned(after(body, coalesced), seen("v3"), now=later).outcome is None
    due = planned(after(body, coalesced), seen("v3"), now=until)
    assert due.decision == triggers.Trigger((0,)) and "nextTriggerTime" not in due.status


# --- invalid -----------------------------------------------------------------------------------------


def test_an_invalid_spec_is_reported_once() -> None:
    body = ctj("cfg", status={"nextTriggerTime": "2026-01-01T00:00:00Z", "triggerCount": 2})
    first = plan.invalid(ctj=body, problems=["spec.cooldown: bad", "spec.history: bad"], now=NOW)
    assert first.decision is None and first.job is None
    assert first.events == (plan.Event("Warning", "InvalidSpec", "spec.cooldown: bad; spec.history: bad"),)
    for type_, status in (("Ready", "False"), ("Available", "False"), ("Progressing", "False"), ("Degraded", "True")):
        assert condition(first, type_) == (status, "InvalidSpec")
    assert "nextTriggerTime" not in first.status and first.status["triggerCount"] == 2
    assert first.status["observedGeneration"] == 3
    again = plan.invalid(ctj=after(body, first), problems=["spec.cooldown: bad", "spec.history: bad"], now=NOW)
    assert again.events == () and again.status == first.status
    other = plan.invalid(ctj=after(body, first), problems=["spec.cooldown: bad"], now=NOW)
    assert reasons(other) == ["InvalidSpec"]


# --- resources that are not present ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason", "warning"),
    [(MISSING, "ResourceMissing", True), (FORBIDDEN, "ResourceForbidden", True), (UNKNOWN, "ResourceMissing", False)],
)
def test_a_resource_that_is_not_present_degrades_the_ctj(state: str, reason: str, warning: bool) -> None:
    gone = Observed(state=state, message="cannot see it")
    result = planned(ctj("cfg"), gone)
    (entry,) = result.status["resourceHashes"]
    assert (entry["state"], entry["hash"], entry["message"]) == (state, plan.ABSENT, "cannot see it")
    assert "lastTriggeredHash" not in entry and entry["changed"] is False
    assert entry["fields"] == [{"field": "data", "hash": plan.ABSENT}]
    assert condition(result, "Ready") == ("False", reason)
    assert condition(result, "Degraded") == ("True", reason)
    assert result.decision == triggers.Nothing(triggers.UNCHANGED)
    assert reasons(result) == ([f"Resource{state}"] if warning else [])
    assert planned(after(ctj("cfg"), result), gone).events == ()  # not again while it stays so


def test_a_missing_resource_keeps_its_reference_when_another_triggers() -> None:
    body = ctj("cfg", "gone")
    body = after(body, planned(body, seen("v1"), seen("g1")))
    result = planned(body, seen("v2"), Observed(state=MISSING, message="not found"))
    assert result.job is not None
    assert result.job.body["metadata"]["annotations"][jobs.HASHES_ANNOTATION].endswith("," + plan.ABSENT)
    changed, missing = result.status["resourceHashes"]
    assert changed["lastTriggeredHash"] == hash_of("v2")
    assert missing["lastTriggeredHash"] == hash_of("g1") and missing["changed"] is False
    back = planned(after(body, result), seen("v2"), seen("g1"))  # it comes back unchanged: no trigger
    assert back.decision == triggers.Nothing(triggers.UNCHANGED)


# --- adoption ----------------------------------------------------------------------------------------


def test_an_adopted_job_covers_what_it_was_made_for() -> None:
    """The trigger's Job exists (an earlier attempt made it for v2); v3 is observed now: still a change."""
    body = ctj("cfg")
    body = after(body, planned(body, seen("v1")))
    name = jobs.job_name(ctj_name="nightly", ctj_uid=UID, sequence=1)
    existing = jobs.JobView(name, "Succeeded", 1, "2026-03-01T11:59:00Z", UID)
    adopted = planned(body, seen("v3"), adopted=plan.Adopted(job=existing, hashes=(hash_of("v2"),)))
    assert adopted.job is not None and adopted.job.name == name
    (entry,) = adopted.status["resourceHashes"]
    assert entry["lastTriggeredHash"] == hash_of("v2") and entry["changed"] is True
    assert adopted.status["lastTriggeredTime"] == "2026-03-01T11:59:00.000000Z"
    assert adopted.status["lastJobStatus"] == "Succeeded"
    assert condition(adopted, "Progressing") == ("False", "Idle")
    assert adopted.settled == ()  # v3 is not covered: the next pass triggers again
    later = planned(after(body, adopted), seen("v3"))
    assert later.decision == triggers.Trigger((0,)) and later.job is not None and later.job.sequence == 2


def test_an_adopted_job_with_unreadable_hashes_covers_what_is_observed() -> None:
    body = after(ctj("cfg"), planned(ctj("cfg"), seen("v1")))
    existing = jobs.JobView(jobs.job_name(ctj_name="nightly", ctj_uid=UID, sequence=1), "Active", 1, "", UID)
    adopted = planned(body, seen("v2"), adopted=plan.Adopted(job=existing, hashes=("",)))
    assert adopted.status["resourceHashes"][0]["lastTriggeredHash"] == hash_of("v2")
    assert adopted.status["lastTriggeredTime"] == conditions.precise_time(NOW)


# --- jobs: status and pruning ------------------------------------------------------------------------


def finished(sequence: int, uid: str = UID) -> jobs.JobView:
    return jobs.JobView(f"job-{sequence}", "Succeeded", sequence, "2026-01-01T00:00:00Z", uid)


def test_last_job_status_follows_the_job() -> None:
    body = after(ctj("cfg"), planned(ctj("cfg"), seen("v1")))
    body["status"].update({"lastJobName": "job-4", "lastJobStatus": "Active"})
    running = planned(body, seen("v1"), jobs_=[jobs.JobView("job-4", "Active", 4, "", UID)])
    assert condition(running, "Progressing") == ("True", "JobActive")
    done = planned(body, seen("v1"), jobs_=[jobs.JobView("job-4", "Failed", 4, "", UID)])
    assert done.status["lastJobStatus"] == "Failed"
    assert condition(done, "Progressing") == ("False", "Idle")


def test_history_prunes_the_oldest_finished_jobs_of_this_ctj_only() -> None:
    body = after(ctj("cfg", history=3), planned(ctj("cfg", history=3), seen("v1")))
    body["status"]["triggerCount"] = 5
    known = [finished(s) for s in range(1, 6)] + [finished(1, uid="an-older-ctj-of-the-same-name")]
    steady = planned(body, seen("v1"), jobs_=known)
    assert sorted(steady.prune) == ["job-1", "job-2"]
    assert steady.pruned_event == plan.Event("Normal", "JobsPruned", "deleted 2 old job(s): job-1, job-2")
    triggered = planned(body, seen("v2"), jobs_=known)  # the new Job counts: one more goes
    assert sorted(triggered.prune) == ["job-1", "job-2", "job-3"]
    assert planned(body, seen("v1"), jobs_=known[:3]).prune == ()
    assert planned(body, seen("v1"), jobs_=known[:3]).pruned_event is None


# --- cover ---------------------------------------------------------------------------------------


def _entry(hash_: str, reference: str | None) -> bodies.ResourceHash:
    entry: bodies.ResourceHash = {
        "hash": hash_,
        "fields": [{"field": "data", "hash": hash_, **({"lastTriggeredHash": reference} if reference else {})}],  # type: ignore[typeddict-item]
        "changed": reference is not None and hash_ not in (reference, plan.ABSENT),
    }
    if reference is not None:
        entry["lastTriggeredHash"] = reference
    return entry


def test_cover_moves_present_references_to_what_the_job_saw() -> None:
    changed, steady = _entry("h2", "h1"), _entry("k1", "k1")
    plan.cover([changed, steady], ["h2", "k1"])
    assert changed["lastTriggeredHash"] == "h2" and changed["changed"] is False
    assert changed["fields"] == [{"field": "data", "hash": "h2", "lastTriggeredHash": "h2"}]
    assert steady["lastTriggeredHash"] == "k1" and steady["changed"] is False


def test_cover_keeps_the_reference_of_a_resource_the_job_did_not_see() -> None:
    """A Missing (or Forbidden/Unknown) resource is covered as ``absent``: its reference must stay,
    or its reappearance with the same content would look like a change and fire a spurious Job."""
    changed, missing, never_seen = _entry("h2", "h1"), _entry(plan.ABSENT, "m1"), _entry(plan.ABSENT, None)
    plan.cover([changed, missing, never_seen], ["h2", plan.ABSENT, plan.ABSENT])
    assert missing["lastTriggeredHash"] == "m1" and missing["changed"] is False
    assert missing["fields"] == [{"field": "data", "hash": plan.ABSENT, "lastTriggeredHash": "m1"}]
    assert "lastTriggeredHash" not in never_seen and never_seen["changed"] is False
    assert changed["lastTriggeredHash"] == "h2"


def test_cover_of_an_adopted_job_for_an_older_state_keeps_the_newer_change_pending() -> None:
    entry, gone = _entry("h3", "h1"), _entry(plan.ABSENT, "g1")
    plan.cover([entry, gone], ["h2", "g2"])
    assert entry["lastTriggeredHash"] == "h2" and entry["changed"] is True
    assert gone["lastTriggeredHash"] == "g2" and gone["changed"] is False


def test_trigger_times_keep_sub_second_precision() -> None:
    """The cooldown is measured from lastTriggeredTime: truncating it would shorten the cooldown."""
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = conditions.precise_time(moment)
    assert text == "2026-01-02T03:04:05.678901Z"
    assert conditions.parse_time(text) == moment
    assert conditions.precise_time(moment + timedelta(microseconds=1)) != text
