"""What a release ships: the licence, one version everywhere, hashed dependencies, a pinned base image.

The version's one source is ``[project] version`` in pyproject.toml (``tools/version.py`` reads it);
``--version``, the traces' ``service.version``, ``changejob_build_info``, the chart's version and
appVersion, the OpenTelemetry resource the chart sets and the image label the release workflow writes
must all say the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import changejob
from changejob import cli
from changejob.telemetry import metrics, tracing

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
LOCK = REPO / "requirements.lock"
# sha256 of the Apache License 2.0 text as published by the ASF (LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def _version_tool() -> Any:
    spec = importlib.util.spec_from_file_location("version_tool", REPO / "tools" / "version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# Licence


def test_license_is_the_full_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    chart = yaml.safe_load((REPO / "chart" / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in (REPO / "Dockerfile").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and sdist `python -m build` makes of the working tree (no network: no isolation)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_wheel_contains_the_license(dists: dict[str, Path]) -> None:
    license_text = (REPO / "LICENSE").read_bytes()
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        info = f"kube_changejob-{VERSION}.dist-info"
        assert wheel.read(f"{info}/licenses/LICENSE") == license_text
        metadata = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert f"Version: {VERSION}" in metadata.splitlines()
    assert not [n for n in names if n.startswith(("tests/", "tools/"))]


def test_sdist_contains_the_license(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        member = sdist.extractfile(f"kube_changejob-{VERSION}/LICENSE")
        assert member is not None
        assert member.read() == (REPO / "LICENSE").read_bytes()


def test_the_image_carries_the_license() -> None:
    """The builder needs it for the wheel (license-files), the final stage keeps a copy in /licenses."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r"^COPY LICENSE /licenses/LICENSE$", final_stage, re.MULTILINE)
    builder = dockerfile.split("\nFROM ")[1]
    assert re.search(r"^COPY .*\bLICENSE\b.* \./$", builder, re.MULTILINE)
    assert "!LICENSE" in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------------------------------
# One version


def test_package_version_is_the_pyproject_version() -> None:
    assert changejob.__version__ == VERSION
    assert _version_tool().package_version() == VERSION


def test_version_flag_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"kube-changejob {VERSION}"


def test_traces_carry_it_as_service_version(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    assert tracing.setup(exporter=exporter)
    try:
        with tracing.tracer().start_as_current_span("probe"):
            pass
        assert tracing.force_flush()
        [span] = exporter.get_finished_spans()
        assert span.resource.attributes["service.version"] == VERSION
        assert span.resource.attributes["service.name"] == "kube-changejob"
    finally:
        tracing.shutdown()


def test_build_info_metric_carries_it() -> None:
    text = metrics.render()[0].decode()
    [line] = [line for line in text.splitlines() if line.startswith("changejob_build_info{")]
    assert f'version="{VERSION}"' in line
    assert f'python_version="{sys.version.split()[0]}"' in line
    assert line.endswith(" 1.0")


def test_chart_states_it() -> None:
    chart = yaml.safe_load((REPO / "chart" / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION
    assert _version_tool().problems() == []


def test_version_check_names_every_disagreement(tmp_path: Path) -> None:
    """tools/version.py --check (run by the release workflow) fails on each kind of mismatch."""
    tool = _version_tool()
    (tmp_path / "chart").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "1.2.3"\n')
    (tmp_path / "chart" / "Chart.yaml").write_text('version: 1.2.3\nappVersion: "1.2.4"\n')
    assert tool.problems(repo=tmp_path) == ["chart/Chart.yaml appVersion is 1.2.4, pyproject.toml version is 1.2.3"]
    (tmp_path / "chart" / "Chart.yaml").write_text('version: 1.2.2\nappVersion: "1.2.3"\n')
    assert tool.problems(repo=tmp_path, tag="v1.2.3") == [
        "chart/Chart.yaml version is 1.2.2, pyproject.toml version is 1.2.3"
    ]
    (tmp_path / "chart" / "Chart.yaml").write_text('version: 1.2.3\nappVersion: "1.2.3"\n')
    assert tool.problems(repo=tmp_path, tag="v1.2.3") == []
    assert tool.problems(repo=tmp_path, tag="1.2.3") == ["tag 1.2.3 is not v1.2.3 (pyproject.toml version)"]
    (tmp_path / "chart" / "Chart.yaml").write_text("version: 1.2.3\n")
    assert tool.problems(repo=tmp_path) == ["chart/Chart.yaml has no appVersion"]


def test_release_workflow_labels_and_packages_with_it() -> None:
    """The image label and the chart's versions come from tools/version.py, which checks the tag."""
    text = (REPO / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert 'tools/version.py --check --tag "$GITHUB_REF_NAME"' in text
    assert "org.opencontainers.image.version=${{ needs.version.outputs.version }}" in text
    assert "GITHUB_REF_NAME#v" not in text, "versions come from tools/version.py, not from the tag text"


# --------------------------------------------------------------------------------------------------
# Locked dependencies


def _lock_entries() -> dict[str, tuple[str, list[str], str]]:
    """name -> (pinned version, hashes, the `# via` block) of every requirement in requirements.lock."""
    text = LOCK.read_text(encoding="utf-8")
    entries: dict[str, tuple[str, list[str], str]] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    for block in blocks:
        head = block.split("\\", 1)[0].strip()
        requirement = Requirement(head)
        [spec] = list(requirement.specifier)
        assert spec.operator == "==", head
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        entries[canonicalize_name(requirement.name)] = (spec.version, hashes, block)
    return entries


def test_lock_is_generated_by_make_lock() -> None:
    head = LOCK.read_text(encoding="utf-8").splitlines()[:2]
    command = "uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes"
    assert head == [
        "# This file was autogenerated by uv via the following command:",
        f"#    {command} --output-file requirements.lock",
    ]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert f"$(VENV)/bin/uv pip compile --quiet {command.removeprefix('uv pip compile ')}" in makefile
    assert re.search(r"^lock:.*##", makefile, re.MULTILINE) and re.search(r"^lock-check:.*##", makefile, re.MULTILINE)


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    entries = _lock_entries()
    declared = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement.name} is in pyproject.toml but not in requirements.lock"
        version, _, via = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} !~ {requirement}"
        assert "kube-changejob (pyproject.toml)" in via, name
    direct = {name for name, (_, _, via) in entries.items() if "kube-changejob (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in declared}, "the lock has direct dependencies pyproject lacks"
    for name, (_, hashes, _) in entries.items():
        assert hashes, f"{name} has no hash: pip install --require-hashes would refuse the lock"


def test_lock_parser_sees_a_stale_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock check is not vacuous: a pin outside pyproject's range is reported."""
    stale = re.sub(r"^kubernetes==[^ ]+", "kubernetes==36.0.0", LOCK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    (tmp_path / "requirements.lock").write_text(stale)
    monkeypatch.setattr(sys.modules[__name__], "LOCK", tmp_path / "requirements.lock")
    with pytest.raises(AssertionError, match=re.escape("kubernetes==36.0.0")):
        test_lock_pins_every_runtime_dependency_with_hashes()


def test_image_installs_the_lock_with_hashes() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"pip install --require-hashes --only-binary=:all: -r requirements\.lock", dockerfile)
    # The project's own wheel adds nothing unlocked.
    assert re.search(r"pip install --no-deps --no-index /wheels/\*\.whl", dockerfile)
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


def test_base_image_is_pinned_by_digest() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:3\.12-slim@sha256:[0-9a-f]{64}", base), base
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert froms and all(ref == "${PYTHON_IMAGE}" for ref in froms), froms


# --------------------------------------------------------------------------------------------------
# The update bot


def _renovate() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((REPO / ".github" / "renovate.json").read_text(encoding="utf-8"))
    return loaded


def _js_regex(pattern: str) -> re.Pattern[str]:
    """A Renovate (JavaScript) regex in Python: named groups are spelled (?P<name>...)."""
    return re.compile(re.sub(r"\(\?<([a-zA-Z]\w*)>", r"(?P<\1>", pattern.strip("/")))


def test_renovate_covers_pip_go_pins_base_image_and_actions() -> None:
    config = _renovate()
    assert {"pep621", "pip-compile", "gomod", "dockerfile", "github-actions", "custom.regex"} <= set(
        config["enabledManagers"]
    )
    [lock_pattern] = config["pip-compile"]["managerFilePatterns"]
    assert _js_regex(lock_pattern).search("requirements.lock")
    assert "helpers:pinGitHubActionDigests" in config["extends"]
    assert "gomodTidy" in config["postUpdateOptions"]
    [base] = [r for r in config["packageRules"] if r.get("matchManagers") == ["dockerfile"]]
    assert base["pinDigests"] is True and base["matchDepNames"] == ["python"]


def test_renovate_updates_every_pin_of_tools_pins_env() -> None:
    """A pin added to tools/pins.env without an update rule fails here."""
    pins_env = (REPO / "tools" / "pins.env").read_text(encoding="utf-8")
    pins = dict(re.findall(r"^(\w+)=(\S+)$", pins_env, re.MULTILINE))
    pins.pop("GO_TOOLCHAIN")
    covered: dict[str, str] = {}
    for manager in _renovate()["customManagers"]:
        if not any(_js_regex(p).search("tools/pins.env") for p in manager["managerFilePatterns"]):
            continue
        assert manager["datasourceTemplate"] == "go"
        for pattern in manager["matchStrings"]:
            for match in _js_regex(pattern).finditer(pins_env):
                variable = match.group(0).split("=", 1)[0]
                covered[variable] = match.group("currentValue")
    assert covered == pins


def test_release_packages_the_chart_with_the_digest(tmp_path: Path) -> None:
    tool = importlib.util.spec_from_file_location("release_tool", REPO / "tools" / "release.py")
    assert tool is not None and tool.loader is not None
    release = importlib.util.module_from_spec(tool)
    tool.loader.exec_module(release)
    values = (REPO / "chart" / "values.yaml").read_text(encoding="utf-8")
    digest = "sha256:" + "ab" * 32
    changed = release.set_image(values, repository="registry.example:5000/team/kube-changejob", digest=digest)
    before, after = values.splitlines(), changed.splitlines()
    assert len(before) == len(after)
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert diff == [
        ("  repository: ghcr.io/nusnewob/kube-changejob", "  repository: registry.example:5000/team/kube-changejob"),
        ('  digest: ""', f'  digest: "{digest}"'),
    ]
    for bad in ({"digest": "sha256:123"}, {"digest": "latest"}, {"repository": "Bad Name"}):
        with pytest.raises(ValueError, match="not an image"):
            release.set_image(values, **{"repository": "r/x", "digest": digest, **bad})
