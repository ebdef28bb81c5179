"""Cooldown (deferral, coalescing, reverts) and the status of the Jobs a CTJ created."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest
from ctj_helpers import Kube, baseline_recorded, condition, ctj_body, wait_until
from operator_proc import OperatorProcess

from changejob.domain import conditions

pytestmark = pytest.mark.integration

COOLDOWN = 5  # seconds; long enough to make several changes inside it, short enough to wait out
T = TypeVar("T")


def until(fn: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    """``wait_until`` for a predicate that returns a value or None: the value, typed without None."""
    found = wait_until(fn, timeout=timeout, what=what)
    assert found is not None
    return found


def cond(ctj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    found = condition(ctj, type_)
    assert found is not None, f"no {type_} condition in {ctj.get('status')}"
    return found


def jobs_at_least(kube: Kube, name: str, count: int) -> list[dict[str, Any]] | None:
    jobs = kube.jobs(name)
    return jobs if len(jobs) >= count else None


def config_ref(kube: Kube, name: str = "cfg") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": kube.ns}


def set_value(kube: Kube, value: str) -> None:
    kube.patch("configmap", "cfg", {"data": {"k": value}})


def status(kube: Kube, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.ctj(name).get("status") or {}
    return found


def with_pod_template(
    body: dict[str, Any], *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    body = copy.deepcopy(body)
    metadata = body["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    metadata.setdefault("labels", {}).update(labels or {})
    metadata.setdefault("annotations", {}).update(annotations or {})
    return body


def first_job(kube: Kube, name: str) -> dict[str, Any]:
    """Create ConfigMap cfg and CTJ ``name`` (cooldown COOLDOWN), change cfg once, return Job 1."""
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body(name, [config_ref(kube)], cooldown=f"{COOLDOWN}s"))
    wait_until(baseline_recorded(kube, name), what="baseline")
    set_value(kube, "1")
    jobs = wait_until(lambda: kube.jobs(name), what="the first Job")
    wait_until(lambda: status(kube, name).get("triggerCount") == 1, what="status of trigger 1")
    return jobs[0]


def deferred(kube: Kube, name: str) -> dict[str, Any] | None:
    ctj = kube.ctj(name)
    return ctj if (ctj.get("status") or {}).get("nextTriggerTime") else None


# --------------------------------------------------------------------------------------------------
# Cooldown


def test_deferral_is_visible(kube: Kube, operator: OperatorProcess) -> None:
    first_job(kube, "cool")
    set_value(kube, "2")
    ctj = until(lambda: deferred(kube, "cool"), what="nextTriggerTime")
    st = ctj["status"]
    last = conditions.parse_time(st["lastTriggeredTime"])
    assert conditions.parse_time(st["nextTriggerTime"]) == last + dt.timedelta(seconds=COOLDOWN)
    progressing = cond(ctj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "CooldownDeferred")
    assert st["nextTriggerTime"] in progressing["message"]
    assert st["resourceHashes"][0]["changed"] is True
    assert len(kube.jobs("cool")) == 1
    reasons = [e["reason"] for e in kube.events("cool")]
    assert "TriggerDeferred" in reasons, reasons

    jobs = until(lambda: jobs_at_least(kube, "cool", 2), timeout=COOLDOWN + 15, what="the deferred Job")
    created = conditions.parse_time(jobs[1]["metadata"]["creationTimestamp"])
    assert created >= last + dt.timedelta(seconds=COOLDOWN - 1)  # timestamps have whole seconds
    wait_until(
        lambda: not deferred(kube, "cool") and status(kube, "cool")["triggerCount"] == 2, what="deferral cleared"
    )
    assert len(kube.jobs("cool")) == 2
    assert cond(kube.ctj("cool"), "Progressing")["reason"] != "CooldownDeferred"


def test_changes_inside_the_cooldown_coalesce(kube: Kube, operator: OperatorProcess) -> None:
    first_job(kube, "coalesce")
    for value in ("2", "3", "4", "5"):
        set_value(kube, value)
    wait_until(lambda: deferred(kube, "coalesce"), what="nextTriggerTime")
    jobs = until(
        lambda: jobs_at_least(kube, "coalesce", 2), timeout=COOLDOWN + 15, what="the Job at the end of the cooldown"
    )
    wait_until(
        lambda: not deferred(kube, "coalesce") and status(kube, "coalesce")["resourceHashes"][0]["changed"] is False,
        what="status at rest",
    )
    assert len(kube.jobs("coalesce")) == 2
    # The one Job covers the final state.
    entry = status(kube, "coalesce")["resourceHashes"][0]
    assert jobs[1]["metadata"]["annotations"]["changejob.dev/hashes"] == entry["hash"] == entry["lastTriggeredHash"]
    assert status(kube, "coalesce")["triggerCount"] == 2


def test_change_reverted_inside_the_cooldown_does_not_trigger(kube: Kube, operator: OperatorProcess) -> None:
    first_job(kube, "revert")
    reference = status(kube, "revert")["resourceHashes"][0]["lastTriggeredHash"]
    set_value(kube, "2")
    ctj = until(lambda: deferred(kube, "revert"), what="nextTriggerTime")
    fire_at = conditions.parse_time(ctj["status"]["nextTriggerTime"])
    set_value(kube, "1")  # back to what trigger 1 covered

    def reverted() -> dict[str, Any] | None:
        st = status(kube, "revert")
        entry = st["resourceHashes"][0]
        return st if entry["hash"] == reference and entry["changed"] is False else None

    st = until(reverted, what="status showing the revert")
    assert "nextTriggerTime" not in st

    # Wait out the cooldown the deferral was heading for, plus a margin for a late timer.
    wait_until(
        lambda: dt.datetime.now(dt.UTC) > fire_at + dt.timedelta(seconds=2),
        timeout=COOLDOWN + 10,
        what="the end of the cooldown",
    )
    assert len(kube.jobs("revert")) == 1
    assert status(kube, "revert")["triggerCount"] == 1

    # The next real change fires at once (the cooldown is over) and is trigger 2.
    set_value(kube, "3")
    jobs = until(lambda: jobs_at_least(kube, "revert", 2), what="the next Job")
    assert [j["metadata"]["annotations"]["changejob.dev/trigger"] for j in jobs] == ["1", "2"]


# --------------------------------------------------------------------------------------------------
# Job status


def test_job_status_active_then_succeeded(kube: Kube, operator: OperatorProcess) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    body = with_pod_template(
        ctj_body("slow", [config_ref(kube)], cooldown="0s"), annotations={"changejob.dev/test-duration": "5s"}
    )
    kube.apply(body)
    wait_until(baseline_recorded(kube, "slow"), what="baseline")
    set_value(kube, "1")
    job = wait_until(lambda: kube.jobs("slow"), what="the Job")[0]

    def phase(expected: str) -> dict[str, Any] | None:
        ctj = kube.ctj("slow")
        st = ctj.get("status") or {}
        return ctj if st.get("lastJobName") == job["metadata"]["name"] and st.get("lastJobStatus") == expected else None

    ctj = until(lambda: phase("Active"), what="lastJobStatus Active")
    progressing = cond(ctj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "JobActive")
    pod_running = kube.run(
        "get",
        "pods",
        "-n",
        kube.ns,
        "-l",
        f"job-name={job['metadata']['name']}",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ).stdout
    assert "Succeeded" not in pod_running

    ctj = until(lambda: phase("Succeeded"), timeout=30, what="lastJobStatus Succeeded")
    progressing = cond(ctj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Idle")
    finished = kube.get("job", job["metadata"]["name"])
    assert finished is not None and finished["status"].get("succeeded") == 1


def test_failing_job_is_reported_failed(kube: Kube, operator: OperatorProcess) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    body = with_pod_template(
        ctj_body("failing", [config_ref(kube)], cooldown="0s"), labels={"changejob.dev/test-fail": "true"}
    )
    kube.apply(body)
    wait_until(baseline_recorded(kube, "failing"), what="baseline")
    set_value(kube, "1")
    job = wait_until(lambda: kube.jobs("failing"), what="the Job")[0]
    wait_until(lambda: status(kube, "failing").get("lastJobStatus") == "Failed", timeout=60, what="Failed")
    ctj = kube.ctj("failing")
    assert ctj["status"]["lastJobName"] == job["metadata"]["name"]
    failed = kube.get("job", job["metadata"]["name"])
    assert failed is not None
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in failed["status"]["conditions"])
    assert cond(ctj, "Progressing")["reason"] != "JobActive"
