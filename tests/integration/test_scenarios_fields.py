"""Watching specific fields: only changes of the selected fields trigger.

A change that must not trigger is proven harmless in two steps: a probe CTJ watching the whole
object (``["*"]``) shows the operator did see that change (its hash for the object moves), and a
later change that does trigger produces trigger number 1, so nothing fired before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration

IMAGE = "spec.template.spec.containers[*].image"
REPLICAS = "spec.replicas"
RESOURCES = "spec.template.spec.containers[*].resources"


def ref(kube: Kube, kind: str, name: str, fields: list[str] | None = None) -> dict[str, Any]:
    api_version = "apps/v1" if kind == "Deployment" else "v1"
    found: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "name": name, "namespace": kube.ns}
    if fields is not None:
        found["fields"] = fields
    return found


def watch(kube: Kube, name: str, resource: dict[str, Any], *, with_probe: bool = True) -> None:
    """A CTJ ``name`` on ``resource`` (cooldown 0s) and, optionally, a probe watching all of it."""
    kube.apply(ctj_body(name, [resource], cooldown="0s"))
    if with_probe:
        kube.apply(ctj_body(f"{name}-probe", [{**resource, "fields": ["*"]}], cooldown="0s"))
        wait_until(baseline_recorded(kube, f"{name}-probe"), what="probe baseline")
    wait_until(baseline_recorded(kube, name), what=f"baseline of {name}")


def current_hash(kube: Kube, name: str) -> str:
    return str(kube.ctj(name)["status"]["resourceHashes"][0]["hash"])


def seen_by_probe(kube: Kube, name: str, change: Callable[[], object]) -> None:
    """Make ``change`` and wait until the probe of ``name`` has observed it."""
    before = current_hash(kube, f"{name}-probe")
    change()
    wait_until(lambda: current_hash(kube, f"{name}-probe") != before, what="the probe to see the change")


def only_job(kube: Kube, name: str) -> dict[str, Any]:
    """Wait for the first Job of ``name`` and check it is the only one and trigger number 1."""
    wait_until(lambda: kube.jobs(name), what=f"a Job of {name}")
    wait_until(
        lambda: (
            kube.ctj(name)["status"]["resourceHashes"][0]["changed"] is False
            and kube.ctj(name)["status"]["triggerCount"] >= 1
        ),
        what="status after the trigger",
    )
    jobs = kube.jobs(name)
    assert len(jobs) == 1, [j["metadata"]["annotations"] for j in jobs]
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/trigger"] == "1"
    assert kube.ctj(name)["status"]["triggerCount"] == 1
    return jobs[0]


def changed_fields(job: dict[str, Any]) -> str:
    return str(job["metadata"]["annotations"]["changejob.dev/changed"]).rpartition(":")[2]


def create_deployment(kube: Kube, name: str, *, image: str = "nginx:1.25", replicas: int = 1) -> None:
    kube.run("create", "deployment", name, "-n", kube.ns, f"--image={image}", f"--replicas={replicas}")


# --------------------------------------------------------------------------------------------------
# ConfigMap fields


def test_data_only_ignores_metadata(kube: Kube, operator: OperatorProcess) -> None:
    kube.run("create", "configmap", "app-config", "-n", kube.ns, "--from-literal=key=value")
    watch(kube, "config-data-watcher", ref(kube, "ConfigMap", "app-config", ["data"]))

    seen_by_probe(
        kube,
        "config-data-watcher",
        lambda: kube.run("annotate", "configmap", "app-config", "-n", kube.ns, "note=unrelated"),
    )
    seen_by_probe(
        kube, "config-data-watcher", lambda: kube.run("label", "configmap", "app-config", "-n", kube.ns, "tier=backend")
    )
    assert kube.jobs("config-data-watcher") == []

    kube.patch("configmap", "app-config", {"data": {"key": "newvalue"}})
    assert changed_fields(only_job(kube, "config-data-watcher")) == "data"


def test_single_key_ignores_other_keys(kube: Kube, operator: OperatorProcess) -> None:
    kube.run(
        "create", "configmap", "my-config", "-n", kube.ns, "--from-literal=important-key=1", "--from-literal=other=1"
    )
    watch(kube, "important-key", ref(kube, "ConfigMap", "my-config", ["data.important-key"]))

    seen_by_probe(kube, "important-key", lambda: kube.patch("configmap", "my-config", {"data": {"other": "2"}}))
    seen_by_probe(kube, "important-key", lambda: kube.patch("configmap", "my-config", {"data": {"added": "x"}}))
    assert kube.jobs("important-key") == []

    kube.patch("configmap", "my-config", {"data": {"important-key": "2"}})
    assert changed_fields(only_job(kube, "important-key")) == "data.important-key"


def test_bracketed_dotted_key(kube: Kube, operator: OperatorProcess) -> None:
    kube.run(
        "create", "configmap", "app", "-n", kube.ns, "--from-literal=app.properties=a=1", "--from-literal=app=plain"
    )
    watch(kube, "props", ref(kube, "ConfigMap", "app", ["data['app.properties']"]))
    status_fields = kube.ctj("props")["status"]["resourceHashes"][0]["fields"]
    assert [f["field"] for f in status_fields] == ["data['app.properties']"]
    assert status_fields[0]["hash"] != "absent"  # the dotted key is found, not read as data.app.properties

    seen_by_probe(kube, "props", lambda: kube.patch("configmap", "app", {"data": {"app": "changed"}}))
    assert kube.jobs("props") == []

    kube.patch("configmap", "app", {"data": {"app.properties": "a=2"}})
    assert changed_fields(only_job(kube, "props")) == "data['app.properties']"


# --------------------------------------------------------------------------------------------------
# Deployment fields


def test_image_watcher_ignores_scaling(kube: Kube, operator: OperatorProcess) -> None:
    create_deployment(kube, "web-app")
    watch(kube, "image-watcher", ref(kube, "Deployment", "web-app", [IMAGE]))

    seen_by_probe(
        kube, "image-watcher", lambda: kube.run("scale", "deployment", "web-app", "-n", kube.ns, "--replicas=3")
    )
    assert kube.jobs("image-watcher") == []

    kube.run("set", "image", "deployment/web-app", "-n", kube.ns, "nginx=nginx:1.26")
    job = only_job(kube, "image-watcher")
    assert job["metadata"]["annotations"]["changejob.dev/changed"] == f"Deployment/{kube.ns}/web-app:{IMAGE}"


def test_each_of_several_fields_triggers(kube: Kube, operator: OperatorProcess) -> None:
    create_deployment(kube, "app")
    watch(kube, "multi-field-watcher", ref(kube, "Deployment", "app", [REPLICAS, IMAGE, RESOURCES]), with_probe=False)
    changes = [
        (REPLICAS, ["scale", "deployment", "app", "--replicas=2"]),
        (IMAGE, ["set", "image", "deployment/app", "nginx=nginx:1.27"]),
        (RESOURCES, ["set", "resources", "deployment/app", "--limits=cpu=200m,memory=128Mi"]),
    ]
    for number, (field, command) in enumerate(changes, start=1):
        kube.run(*command, "-n", kube.ns)

        def fired(n: int = number) -> list[dict[str, Any]] | None:
            jobs = kube.jobs("multi-field-watcher")
            return jobs if len(jobs) >= n else None

        jobs = wait_until(fired, what=f"the Job for {field}")
        assert jobs is not None
        wait_until(
            lambda: kube.ctj("multi-field-watcher")["status"]["resourceHashes"][0]["changed"] is False,
            what="status after the trigger",
        )
        assert len(kube.jobs("multi-field-watcher")) == number
        assert changed_fields(jobs[number - 1]) == field
    status = kube.ctj("multi-field-watcher")["status"]["resourceHashes"][0]
    assert [f["field"] for f in status["fields"]] == [REPLICAS, IMAGE, RESOURCES]
    assert all(f["hash"] == f["lastTriggeredHash"] for f in status["fields"])


def test_status_only_changes_do_not_trigger(kube: Kube, operator: OperatorProcess) -> None:
    # Created and settled first: the deployment controller's own metadata (the revision annotation)
    # is written before anything is watched.
    create_deployment(kube, "web")
    kube.run("rollout", "status", "deployment/web", "-n", kube.ns, "--timeout=60s")
    kube.apply(ctj_body("whole", [ref(kube, "Deployment", "web", ["*"])], cooldown="0s"))
    kube.apply(ctj_body("status-probe", [ref(kube, "Deployment", "web", ["status"])], cooldown="0s"))
    wait_until(baseline_recorded(kube, "whole"), what="baseline")
    wait_until(baseline_recorded(kube, "status-probe"), what="probe baseline")
    whole_hash = current_hash(kube, "whole")

    # Replacing the pod makes kube-controller-manager rewrite the Deployment's status (ready and
    # available replicas drop and recover) without touching anything else.
    kube.run("delete", "pods", "-n", kube.ns, "-l", "app=web", "--wait=false")
    wait_until(lambda: kube.jobs("status-probe"), timeout=60, what="a status change seen by the operator")
    kube.run("rollout", "status", "deployment/web", "-n", kube.ns, "--timeout=60s")
    assert kube.jobs("whole") == []
    assert current_hash(kube, "whole") == whole_hash

    # A label: a change of the object itself that no controller follows up on. (A new image would
    # also do, but the deployment controller then bumps its revision annotation, a second change.)
    kube.run("label", "deployment", "web", "-n", kube.ns, "release=next")
    assert changed_fields(only_job(kube, "whole")) == "*"


# --------------------------------------------------------------------------------------------------
# Editing the spec


def test_editing_fields_records_a_new_baseline(kube: Kube, operator: OperatorProcess) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=a=1", "--from-literal=b=1")
    body = ctj_body("edited", [ref(kube, "ConfigMap", "cfg", ["data.a"])], cooldown="0s")
    kube.apply(body)
    wait_until(baseline_recorded(kube, "edited"), what="first baseline")
    first = kube.ctj("edited")["status"]["resourceHashes"][0]

    # b moves while it is not watched; then the CTJ is edited to watch b: the moved value becomes the
    # new baseline rather than a change.
    kube.patch("configmap", "cfg", {"data": {"b": "2"}})
    body["spec"]["resources"][0]["fields"] = ["data.b"]
    kube.apply(body)

    def rebaselined() -> dict[str, Any] | None:
        ctj = kube.ctj("edited")
        entry = ctj["status"]["resourceHashes"][0]
        return ctj if [f["field"] for f in entry["fields"]] == ["data.b"] else None

    ctj = wait_until(rebaselined, what="status for the edited fields")
    assert ctj is not None
    entry = ctj["status"]["resourceHashes"][0]
    assert ctj["status"]["observedGeneration"] == ctj["metadata"]["generation"] == 2
    assert entry["lastTriggeredHash"] == entry["hash"] != first["hash"]
    assert entry["changed"] is False
    assert ctj["status"]["triggerCount"] == 0
    assert kube.jobs("edited") == []
    baselines = [e for e in kube.events("edited") if e["reason"] == "BaselineRecorded"]
    assert len(baselines) == 2, [e["message"] for e in kube.events("edited")]

    kube.patch("configmap", "cfg", {"data": {"b": "3"}})
    assert changed_fields(only_job(kube, "edited")) == "data.b"
