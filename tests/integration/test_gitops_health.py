"""Live ChangeTriggeredJobs in every state, judged by the GitOps tools' own code.

The operator runs with exactly the chart's grants (ConfigMaps only, so a watched Secret is
Forbidden); the checker ``gitops-health`` (tools/go/health) runs kstatus (sigs.k8s.io/cli-utils and
Flux's fork) and Argo CD's own Lua runner with docs/argocd-health.lua on each object as the API
server returns it. What each tool must say is docs/health-states.yaml; a state whose kstatus value
needs a condition the operator does not write yet is checked against the value kstatus gives until
then, and against the documented one as soon as the object carries that condition.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ctj_helpers import Kube, baseline_recorded, condition, ctj_body, wait_until
from operator_proc import OperatorProcess
from rbac_helpers import ChartRbac
from test_rbac import CONFIGMAPS_ONLY, cluster_wide

from gitops_health import judge

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STATES: dict[str, dict[str, Any]] = yaml.safe_load((REPO / "docs" / "health-states.yaml").read_text())["states"]


def expected_kstatus(state: str, obj: dict[str, Any]) -> str:
    want = STATES[state]
    pending = want.get("pending")
    if pending and condition(obj, pending["condition"]) is None:
        return str(pending["until"])
    return str(want["kstatus"])


def check(state: str, obj: dict[str, Any]) -> None:
    verdict = judge(obj)
    summary = f"{state}: {json.dumps(verdict)}\nstatus: {json.dumps(obj.get('status'))}"
    for tool in ("kstatus", "fluxKstatus", "argocd"):
        assert not verdict[tool].get("error"), summary
    assert verdict["argocd"]["status"] == STATES[state]["argocd"], summary
    kstatus = expected_kstatus(state, obj)
    assert verdict["kstatus"]["status"] == kstatus, summary
    assert verdict["fluxKstatus"]["status"] == kstatus, summary


@pytest.fixture
def states(
    admin_kube: Kube,
    chart_rbac: Callable[..., ChartRbac],
    chart_operator: Callable[..., OperatorProcess],
) -> Callable[[], OperatorProcess]:
    """Starts the operator with the chart's grants for ConfigMaps only (the RBAC is applied now)."""
    rbac = chart_rbac(cluster_wide(resources=CONFIGMAPS_ONLY))
    return lambda: chart_operator(rbac)


def ref(kube: Kube, kind: str = "ConfigMap", name: str = "settings", api_version: str = "v1") -> dict[str, str]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "namespace": kube.ns}


def test_every_state_is_judged_as_documented(admin_kube: Kube, states: Callable[[], OperatorProcess]) -> None:
    kube = admin_kube
    judged: set[str] = set()

    def settled(name: str, state: str, ready: Callable[[dict[str, Any]], bool]) -> None:
        def reached() -> dict[str, Any] | None:
            obj = kube.ctj(name)
            return obj if ready(obj) else None

        check(state, wait_until(reached, timeout=60, what=state))
        judged.add(state)

    kube.run("create", "configmap", "settings", "-n", kube.ns, "--from-literal=v=1")
    for name, extra in (
        ("idle", {}),
        ("active", {"annotations": {"changejob.dev/test-duration": "120s"}}),
        ("succeeded", {}),
        ("failed", {"labels": {"changejob.dev/test-fail": "true"}}),
    ):
        body = ctj_body(name, [ref(kube)], cooldown="0s")
        body["spec"]["jobTemplate"]["spec"]["template"]["metadata"].update(extra)
        kube.apply(body)
    kube.apply(ctj_body("cooldown", [ref(kube)], cooldown="1h"))
    kube.apply(ctj_body("missing", [ref(kube, name="not-there")]))
    kube.apply(ctj_body("forbidden", [ref(kube, kind="Secret", name="db")]))
    kube.apply(ctj_body("invalid", [ref(kube, kind="Widget", api_version="example.com/v1")]))
    # Nothing has seen them yet.
    settled("idle", "fresh", lambda o: True)

    operator = states()
    for name in ("idle", "active", "succeeded", "failed", "cooldown"):
        wait_until(baseline_recorded(kube, name), timeout=60, what=f"{name} baseline")
    settled("idle", "idle", lambda o: (condition(o, "Ready") or {}).get("status") == "True")
    settled("missing", "missing", lambda o: (condition(o, "Degraded") or {}).get("reason") == "ResourceMissing")
    settled("forbidden", "forbidden", lambda o: (condition(o, "Degraded") or {}).get("reason") == "ResourceForbidden")
    settled("invalid", "invalid", lambda o: (condition(o, "Degraded") or {}).get("reason") == "InvalidSpec")

    # One change: a Job for each cooldown-free CTJ, and a first trigger for "cooldown".
    kube.patch("configmap", "settings", {"data": {"v": "2"}})
    settled("active", "job-active", lambda o: (o.get("status") or {}).get("lastJobStatus") == "Active")
    settled("succeeded", "job-succeeded", lambda o: (o.get("status") or {}).get("lastJobStatus") == "Succeeded")
    settled("failed", "job-failed", lambda o: (o.get("status") or {}).get("lastJobStatus") == "Failed")
    wait_until(lambda: (kube.ctj("cooldown").get("status") or {}).get("triggerCount") == 1, timeout=60, what="trigger")
    # A second change falls inside the cooldown of one hour.
    kube.patch("configmap", "settings", {"data": {"v": "3"}})
    settled("cooldown", "cooldown", lambda o: bool((o.get("status") or {}).get("nextTriggerTime")))

    operator.stop()
    kube.patch("changetriggeredjob", "idle", {"spec": {"history": 3}})
    settled("idle", "new-generation", lambda o: o["metadata"]["generation"] == 2)

    assert judged == set(STATES)
