"""docs/gitops.md and the Argo CD health check (docs/argocd-health.lua).

The Lua check runs under any Lua interpreter found on PATH (Argo CD embeds Lua 5.1; the script uses
nothing newer). Without one those cases are skipped: the interpreter is optional for this project.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def lua() -> str:
    for name in ("lua5.1", "luajit", "lua", "lua5.4", "lua5.3"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Lua interpreter on PATH; the Argo CD health check is tested where one is installed")


def to_lua(value: Any) -> str:
    """A Lua expression for a JSON-like value (what Argo CD hands the script as `obj`)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua string literal for ASCII
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    assert isinstance(value, Mapping)
    return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"


def health(obj: Mapping[str, Any]) -> tuple[str, str]:
    program = textwrap.dedent(f"""\
        obj = {to_lua(obj)}
        local check = assert(loadfile({json.dumps(str(HEALTH))}))
        local hs = check()
        io.write(hs.status, "\\n", hs.message)
        """)
    out = subprocess.run([lua(), "-"], input=program, capture_output=True, text=True, check=True, timeout=30).stdout
    status, message = out.split("\n", 1)
    return status, message


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
