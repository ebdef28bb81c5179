"""The GitHub Actions workflows: actionlint clean, actions pinned by SHA, minimal permissions, one gate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s+v\d+(\.\d+)*\s*$")


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); use BaseLoader to keep it a string.
    loaded: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    return loaded


def actionlint() -> str:
    local = REPO / ".tools" / "bin" / "actionlint"
    found = str(local) if os.access(local, os.X_OK) else shutil.which("actionlint")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("actionlint is required in CI (build it with: tools/build.sh actionlint)")
    pytest.skip("actionlint is not built (tools/build.sh actionlint); CI builds and runs it")


def test_the_expected_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "e2e.yml", "release.yml"]


def test_actionlint() -> None:
    result = subprocess.run(
        [actionlint(), "-no-color", *map(str, WORKFLOWS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.nonexistent_context_key }}\n        foo: bar\n"
    )
    result = subprocess.run(
        [actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commit_shas(path: Path) -> None:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines, "no actions used"
    unpinned = [line.strip() for line in lines if not PINNED.match(line)]
    assert unpinned == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_minimal(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {}, "the workflow-level token must have no permissions"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"job {name} must declare its permissions"
        granted = job["permissions"]
        assert isinstance(granted, dict), f"job {name}: list permissions explicitly"
        assert all(level in ("read", "write", "none") for level in granted.values())
        if path.name != "release.yml":
            assert all(level != "write" for level in granted.values()), f"job {name} may not write"


def test_checkout_does_not_keep_credentials() -> None:
    for path in WORKFLOWS:
        for job in load(path)["jobs"].values():
            for step in job.get("steps", ()):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] == "false", path.name


def test_ci_has_a_single_gate_over_every_job() -> None:
    jobs = load(REPO / ".github" / "workflows" / "ci.yml")["jobs"]
    gates = [name for name, job in jobs.items() if job.get("if") == "always()"]
    assert gates == ["gate"]
    assert set(jobs["gate"]["needs"]) == set(jobs) - {"gate"}
    assert {"lint", "typecheck", "unit", "integration"} <= set(jobs)
    script = " ".join(step.get("run", "") for step in jobs["gate"]["steps"])
    assert "success" in script


def test_ci_caches_go_and_pip() -> None:
    jobs = load(REPO / ".github" / "workflows" / "ci.yml")["jobs"]
    for name in ("unit", "integration"):
        uses = {str(step.get("uses", "")).split("@")[0]: step for step in jobs[name]["steps"]}
        assert uses["actions/setup-python"]["with"]["cache"] == "pip"
        assert "cache-dependency-path" in uses["actions/setup-go"]["with"]


def test_e2e_runs_the_kind_tests_on_the_built_image() -> None:
    steps = load(REPO / ".github" / "workflows" / "e2e.yml")["jobs"]["kind"]["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    assert "kind load docker-image" in runs
    assert "helm install" in runs
    assert "pytest -m kind" in runs
