"""Run the pinned ``gitops-health`` tool (tools/go/health): the GitOps tools' own judges of an object.

``judge`` answers, for one Kubernetes object, what kstatus (sigs.k8s.io/cli-utils), Flux's kstatus
fork and Argo CD's Lua runner (with docs/argocd-health.lua, as a health check from argocd-cm) say.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helpers

REPO = Path(__file__).resolve().parents[1]
LUA = REPO / "docs" / "argocd-health.lua"


def judge(obj: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """{"kstatus": {...}, "fluxKstatus": {...}, "argocd": {...}}, each with status and message (or error)."""
    out = subprocess.run(
        [helpers.pinned_tool("gitops-health"), "-lua", str(LUA)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    verdict: dict[str, dict[str, str]] = json.loads(out)
    return verdict
