"""docs/gitops.md, docs/health-states.yaml and the Argo CD health check (docs/argocd-health.lua).

The Lua check runs exactly as Argo CD runs a health check from argocd-cm: by Argo CD's own code
(util/lua, gopher-lua with Argo CD's library set-up), in the pinned ``gitops-health`` tool
(tools/go/health), which also reports kstatus. tests/integration/test_gitops_health.py runs it on
live objects in every state; these cases cover the script's branches on objects made up here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_health import judge

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "docs" / "gitops.md"
HEALTH = REPO / "docs" / "argocd-health.lua"
HEALTH_KEY = "resource.customizations.health.triggers.changejob.dev_ChangeTriggeredJob"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", GITOPS.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_every_yaml_example_parses() -> None:
    blocks = yaml_blocks()
    assert len(blocks) >= 4
    kinds = set()
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            assert isinstance(doc, dict) and doc.get("kind"), block[:80]
            kinds.add(doc["kind"])
    assert {"Application", "ConfigMap", "HelmRelease", "Kustomization"} <= kinds


def test_the_documented_health_check_is_the_shipped_file() -> None:
    configmaps = [doc for block in yaml_blocks() for doc in yaml.safe_load_all(block) if doc.get("kind") == "ConfigMap"]
    (configmap,) = configmaps
    assert configmap["data"][HEALTH_KEY] == HEALTH.read_text(encoding="utf-8")


def health(obj: Mapping[str, Any]) -> tuple[str, str]:
    argocd = judge({"apiVersion": "triggers.changejob.dev/v1alpha", **obj})["argocd"]
    assert not argocd.get("error"), argocd
    return argocd["status"], argocd["message"]


def ctj(generation: int, observed: int | None, *conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "2025-01-01T00:00:00Z"}
            for t, s, r, m in conditions
        ]
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": "t", "generation": generation},
        "status": status,
    }


READY = ("Ready", "True", "Reconciled", "watching 2 resources")
NOT_DEGRADED = ("Degraded", "False", "AsExpected", "")


def test_no_status_is_progressing() -> None:
    obj = {"kind": "ChangeTriggeredJob", "metadata": {"name": "t", "generation": 1}}
    assert health(obj)[0] == "Progressing"


def test_ready_is_healthy() -> None:
    assert health(ctj(2, 2, READY, NOT_DEGRADED)) == ("Healthy", "Reconciled: watching 2 resources")


def test_an_unobserved_generation_is_progressing() -> None:
    status, message = health(ctj(3, 2, READY, NOT_DEGRADED))
    assert status == "Progressing"
    assert "generation 3" in message
    assert health(ctj(3, None, READY))[0] == "Progressing"


def test_degraded_wins() -> None:
    degraded = ("Degraded", "True", "ResourceMissing", "ConfigMap default/app-config not found")
    ready_false = ("Ready", "False", "Degraded", "")
    assert health(ctj(1, 1, ready_false, degraded)) == (
        "Degraded",
        "ResourceMissing: ConfigMap default/app-config not found",
    )


def test_ready_false_is_degraded_and_unknown_is_progressing() -> None:
    assert health(ctj(1, 1, ("Ready", "False", "InvalidSpec", ""), NOT_DEGRADED)) == ("Degraded", "InvalidSpec")
    assert health(ctj(1, 1, ("Ready", "Unknown", "", ""), NOT_DEGRADED)) == ("Progressing", "Readiness unknown")


def test_conditions_without_ready_are_progressing() -> None:
    assert health(ctj(1, 1, NOT_DEGRADED))[0] == "Progressing"


def test_kstatus_reads_observed_generation_and_ready() -> None:
    fresh = {"apiVersion": "triggers.changejob.dev/v1alpha", "kind": "ChangeTriggeredJob"}
    defaulted = {**fresh, "metadata": {"name": "t", "generation": 1}, "status": {"observedGeneration": 0}}
    assert judge(defaulted)["kstatus"]["status"] == "InProgress"  # the CRD's default status
    ready = judge(ctj(2, 2, READY, NOT_DEGRADED))
    assert ready["kstatus"]["status"] == ready["fluxKstatus"]["status"] == "Current"
    not_ready = judge(
        ctj(2, 2, ("Ready", "False", "ResourceMissing", "x"), ("Degraded", "True", "ResourceMissing", "x"))
    )
    assert not_ready["kstatus"]["status"] == "InProgress"  # kstatus does read Ready
    stalled = judge(ctj(2, 2, ("Ready", "False", "InvalidSpec", "x"), ("Stalled", "True", "InvalidSpec", "x")))
    assert stalled["kstatus"]["status"] == stalled["fluxKstatus"]["status"] == "Failed"


STATES = yaml.safe_load((REPO / "docs" / "health-states.yaml").read_text(encoding="utf-8"))["states"]


def test_the_documented_table_is_the_data_the_tests_run() -> None:
    text = GITOPS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \| (\w+) \| (\w+) \|", text, flags=re.MULTILINE)
    assert {name: (argocd, kstatus) for name, _, argocd, kstatus in rows} == {
        name: (state["argocd"], state["kstatus"]) for name, state in STATES.items()
    }
