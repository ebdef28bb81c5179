"""What the operator reports when it cannot do its work: a missing resource, an invalid spec.

The admission webhook is not installed here, so invalid specs reach the operator; it must report
them in status and Events (the messages the guide's troubleshooting section quotes) and keep serving
every other CTJ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest
from ctj_helpers import Kube, baseline_recorded, condition, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration
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


def config_ref(kube: Kube, name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": kube.ns, **extra}


def degraded(kube: Kube, name: str, reason: str) -> dict[str, Any] | None:
    ctj = kube.ctj(name)
    found = condition(ctj, "Degraded")
    return ctj if found is not None and found["status"] == "True" and found["reason"] == reason else None


def assert_serving(kube: Kube, operator: OperatorProcess) -> None:
    """The companion CTJ "healthy" still triggers, and the operator process is up and ready."""
    wait_until(baseline_recorded(kube, "healthy"), what="baseline of the healthy CTJ")
    kube.patch("configmap", "healthy-cfg", {"data": {"k": "changed"}})
    jobs = wait_until(lambda: kube.jobs("healthy"), what="the healthy CTJ's Job")
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/trigger"] == "1"
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
    assert operator.http_status("/readyz") == 200


def with_healthy_companion(kube: Kube) -> None:
    kube.run("create", "configmap", "healthy-cfg", "-n", kube.ns, "--from-literal=k=v")
    kube.apply(ctj_body("healthy", [config_ref(kube, "healthy-cfg")], cooldown="0s"))


# --------------------------------------------------------------------------------------------------
# Missing resource


def test_missing_resource_then_created(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(ctj_body("waits", [config_ref(kube, "not-yet")], cooldown="0s"))
    ctj = until(lambda: degraded(kube, "waits", "ResourceMissing"), what="Degraded ResourceMissing")
    entry = ctj["status"]["resourceHashes"][0]
    assert entry["state"] == "Missing" and entry["hash"] == "absent" and "lastTriggeredHash" not in entry
    assert "not-yet" in entry["message"]
    ready = cond(ctj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ResourceMissing")
    assert f"ConfigMap/{kube.ns}/not-yet" in cond(ctj, "Degraded")["message"]
    events = wait_until(
        lambda: [e for e in kube.events("waits") if e["reason"] == "ResourceMissing"], what="the ResourceMissing Event"
    )
    assert events[0]["type"] == "Warning" and "not-yet" in events[0]["message"]

    kube.run("create", "configmap", "not-yet", "-n", kube.ns, "--from-literal=k=0")

    def recovered() -> dict[str, Any] | None:
        found = kube.ctj("waits")
        degraded_ = condition(found, "Degraded")
        entry = found["status"]["resourceHashes"][0]
        return found if degraded_ and degraded_["status"] == "False" and entry.get("lastTriggeredHash") else None

    ctj = until(recovered, what="baseline once the ConfigMap exists")
    entry = ctj["status"]["resourceHashes"][0]
    assert entry["state"] == "Present" and entry["hash"] == entry["lastTriggeredHash"]
    assert entry["changed"] is False
    assert cond(ctj, "Degraded")["reason"] == "AsExpected"
    assert cond(ctj, "Ready")["status"] == "True"
    assert ctj["status"]["triggerCount"] == 0
    assert kube.jobs("waits") == []

    kube.patch("configmap", "not-yet", {"data": {"k": "1"}})
    jobs = wait_until(lambda: kube.jobs("waits"), what="the Job for the change")
    wait_until(
        lambda: kube.ctj("waits")["status"]["resourceHashes"][0]["changed"] is False, what="status after the trigger"
    )
    jobs = kube.jobs("waits")
    assert [j["metadata"]["annotations"]["changejob.dev/trigger"] for j in jobs] == ["1"]


def test_missing_resource_keeps_its_reference_while_another_triggers(kube: Kube, operator: OperatorProcess) -> None:
    """Any over two ConfigMaps: one is deleted, the other changes (a Job), then the first comes back
    unchanged. The Job did not see the deleted one, so its return is no change and fires nothing."""
    kube.run("create", "configmap", "stays", "-n", kube.ns, "--from-literal=k=0")
    kube.run("create", "configmap", "comes-back", "-n", kube.ns, "--from-literal=k=same")
    refs = [config_ref(kube, "stays", fields=["data"]), config_ref(kube, "comes-back", fields=["data"])]
    kube.apply(ctj_body("pair", refs, condition_="Any", cooldown="0s"))
    wait_until(baseline_recorded(kube, "pair"), what="baseline")
    reference = kube.ctj("pair")["status"]["resourceHashes"][1]["lastTriggeredHash"]

    kube.run("delete", "configmap", "comes-back", "-n", kube.ns)
    until(lambda: degraded(kube, "pair", "ResourceMissing"), what="Degraded ResourceMissing")
    kube.patch("configmap", "stays", {"data": {"k": "1"}})

    def fired() -> dict[str, Any] | None:
        found = kube.ctj("pair")
        return found if found["status"].get("triggerCount") == 1 else None

    ctj = until(fired, what="the trigger for the change")
    missing = ctj["status"]["resourceHashes"][1]
    assert (missing["state"], missing["hash"], missing["lastTriggeredHash"]) == ("Missing", "absent", reference)

    kube.run("create", "configmap", "comes-back", "-n", kube.ns, "--from-literal=k=same")

    def back() -> dict[str, Any] | None:
        found = kube.ctj("pair")
        return found if found["status"]["resourceHashes"][1]["state"] == "Present" else None

    # The entry turns Present in the same reconcile that would decide a trigger.
    ctj = until(back, what="the ConfigMap seen again")
    entry = ctj["status"]["resourceHashes"][1]
    assert entry["hash"] == entry["lastTriggeredHash"] == reference and entry["changed"] is False
    assert ctj["status"]["triggerCount"] == 1
    assert len(kube.jobs("pair")) == 1


# --------------------------------------------------------------------------------------------------
# Invalid specs


def test_invalid_field_path(kube: Kube, operator: OperatorProcess) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=v")
    broken = ctj_body("broken", [config_ref(kube, "cfg", fields=["data", "data["])], cooldown="0s")
    kube.apply(broken)
    with_healthy_companion(kube)

    ctj = until(lambda: degraded(kube, "broken", "InvalidSpec"), what="Degraded InvalidSpec")
    message = cond(ctj, "Degraded")["message"]
    assert "spec.resources[0].fields[1]" in message and "data[" in message, message
    for type_ in ("Ready", "Available"):
        found = cond(ctj, type_)
        assert (found["status"], found["reason"]) == ("False", "InvalidSpec"), found
    assert ctj["status"]["observedGeneration"] == ctj["metadata"]["generation"]
    events = wait_until(
        lambda: [e for e in kube.events("broken") if e["reason"] == "InvalidSpec"], what="the InvalidSpec Event"
    )
    assert events[0]["type"] == "Warning" and "data[" in events[0]["message"]

    assert_serving(kube, operator)
    assert kube.jobs("broken") == []

    # Fixing the spec makes the CTJ work: baseline, then triggers.
    broken["spec"]["resources"][0]["fields"] = ["data"]
    kube.apply(broken)
    wait_until(baseline_recorded(kube, "broken"), what="baseline after the fix")
    ctj = kube.ctj("broken")
    assert cond(ctj, "Degraded")["status"] == "False"
    assert cond(ctj, "Available")["status"] == "True"
    kube.patch("configmap", "cfg", {"data": {"k": "w"}})
    wait_until(lambda: kube.jobs("broken"), what="a Job after the fix")


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        # (a kind that starts lowercase, "configmap", never gets this far: the CRD refuses it)
        pytest.param(
            {"apiVersion": "v1", "kind": "Configmap", "name": "cfg", "namespace": "{ns}"},
            "resource kind does not exist",
            id="miscased-kind",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg"},
            "namespace is required for namespaced resources",
            id="namespaced-without-namespace",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Node", "name": "kwok-node-0", "namespace": "{ns}"},
            "namespace must not be set for cluster-scoped resources",
            id="cluster-scoped-with-namespace",
        ),
    ],
)
def test_resource_that_cannot_be_watched(
    kube: Kube, operator: OperatorProcess, resource: dict[str, str], expected: str
) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=v")
    resource = {k: v.format(ns=kube.ns) for k, v in resource.items()}
    kube.apply(ctj_body("unwatchable", [resource], cooldown="0s"))
    with_healthy_companion(kube)

    ctj = until(lambda: degraded(kube, "unwatchable", "InvalidSpec"), what="Degraded InvalidSpec")
    message = cond(ctj, "Degraded")["message"]
    assert expected in message and "spec.resources[0]" in message, message
    ready = cond(ctj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    events = wait_until(
        lambda: [e for e in kube.events("unwatchable") if e["reason"] == "InvalidSpec"], what="the InvalidSpec Event"
    )
    assert expected in events[0]["message"]

    assert_serving(kube, operator)
    assert kube.jobs("unwatchable") == []
