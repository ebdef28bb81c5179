"""Job history: old finished Jobs are pruned (with their pods), running ones never; deleting a CTJ
garbage-collects its Jobs through their ownerReferences."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration


def config_ref(kube: Kube) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": kube.ns}


def setup(kube: Kube, body: dict[str, Any]) -> str:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(body)
    name: str = body["metadata"]["name"]
    wait_until(baseline_recorded(kube, name), what="baseline")
    return name


def trigger(kube: Kube, name: str, number: int, *, finished: bool = True) -> str:
    """Change cfg so that trigger ``number`` fires; return its Job's name (once Succeeded if ``finished``)."""
    kube.patch("configmap", "cfg", {"data": {"k": str(number)}})

    def created() -> str | None:
        st = kube.ctj(name).get("status") or {}
        return st.get("lastJobName") if st.get("triggerCount") == number else None

    job_name = wait_until(created, what=f"trigger {number}")
    if finished:
        wait_until(
            lambda: (
                (kube.ctj(name).get("status") or {}).get("lastJobStatus") == "Succeeded"
                and (kube.ctj(name).get("status") or {}).get("lastJobName") == job_name
            ),
            timeout=60,
            what=f"Job {job_name} Succeeded",
        )
    return str(job_name)


def triggers(kube: Kube, name: str) -> list[str]:
    return [j["metadata"]["annotations"]["changejob.dev/trigger"] for j in kube.jobs(name)]


def pod_names(kube: Kube, job_name: str) -> list[str]:
    out = kube.run("get", "pods", "-n", kube.ns, "-l", f"job-name={job_name}", "-o", "json").stdout
    return [p["metadata"]["name"] for p in json.loads(out)["items"]]


def test_history_keeps_the_newest_jobs_and_deletes_pods(kube: Kube, operator: OperatorProcess) -> None:
    name = setup(kube, ctj_body("pruned", [config_ref(kube)], cooldown="0s", history=2))
    names = [trigger(kube, name, n) for n in (1, 2, 3, 4)]
    wait_until(lambda: triggers(kube, name) == ["3", "4"], what="only triggers 3 and 4 left")
    assert [j["metadata"]["name"] for j in kube.jobs(name)] == names[2:]
    # The pruned Jobs' pods are deleted too (propagationPolicy Background, by the garbage collector).
    wait_until(
        lambda: not pod_names(kube, names[0]) and not pod_names(kube, names[1]),
        timeout=60,
        what="the pods of the pruned Jobs to be gone",
    )
    assert pod_names(kube, names[2]) and pod_names(kube, names[3])
    pruned = [e for e in kube.events(name) if e["reason"] == "JobsPruned"]
    assert pruned and any(names[0] in e["message"] for e in pruned)


def test_running_job_is_never_pruned(kube: Kube, operator: OperatorProcess) -> None:
    body = ctj_body("long-runner", [config_ref(kube)], cooldown="0s", history=1)
    slow = copy.deepcopy(body)
    slow["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] = {"changejob.dev/test-duration": "60s"}
    name = setup(kube, slow)
    running = trigger(kube, name, 1, finished=False)
    assert (kube.ctj(name).get("status") or {}).get("lastJobStatus") == "Active"

    kube.apply(body)  # later Jobs finish at once; only the template changed, so no re-baseline
    wait_until(lambda: kube.ctj(name)["status"].get("observedGeneration") == 2, what="the edited spec")
    second = trigger(kube, name, 2)
    assert {j["metadata"]["name"] for j in kube.jobs(name)} == {running, second}  # history 1, but 1 runs

    # The next finished Job pushes the second out; the running first one still stays.
    third = trigger(kube, name, 3)
    wait_until(
        lambda: {j["metadata"]["name"] for j in kube.jobs(name)} == {running, third},
        what="the finished second Job pruned",
    )
    job = kube.get("job", running)
    assert job is not None and job["metadata"].get("deletionTimestamp") is None
    assert job["status"].get("active") == 1


def test_deleting_the_ctj_deletes_its_jobs(kube: Kube, operator: OperatorProcess) -> None:
    name = setup(kube, ctj_body("short-lived", [config_ref(kube)], cooldown="0s"))
    names = [trigger(kube, name, n) for n in (1, 2)]
    uid = kube.ctj(name)["metadata"]["uid"]
    for job in kube.jobs(name):
        assert {"kind": "ChangeTriggeredJob", "name": name, "uid": uid, "controller": True}.items() <= job["metadata"][
            "ownerReferences"
        ][0].items()

    kube.run("delete", "changetriggeredjob", name, "-n", kube.ns)
    wait_until(lambda: kube.jobs(name) == [], timeout=60, what="the garbage collector to delete the Jobs")
    wait_until(lambda: not any(pod_names(kube, n) for n in names), timeout=60, what="their pods to be gone")
    assert kube.get("changetriggeredjob", name) is None
    assert operator.proc is not None and operator.proc.poll() is None
