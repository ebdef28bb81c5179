"""Start-up checks without a cluster: what is checked, and the errors a newcomer meets first.

The process is run as a user runs it (``python -m changejob.cli run``): one line on stderr saying what
to do, the documented exit code, no traceback. The checks that need a cluster (missing namespace,
missing CRD, RBAC denial) are in tests/integration/test_cli_errors.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from changejob import cli, preflight

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def run_operator(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "changejob.cli",
            "run",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            *args,
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "operator"), "PATH": "/usr/bin:/bin", **env},
        timeout=timeout,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: preflight.ExitCode, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kube-changejob: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_no_kubeconfig_outside_a_pod(tmp_path: Path) -> None:
    result = run_operator(env={"HOME": str(tmp_path)})
    assert_one_line(result, preflight.ExitCode.KUBECONFIG, "no kubeconfig found", "--kubeconfig=PATH", "KUBECONFIG")


def test_kubeconfig_variable_naming_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_operator(env={"HOME": str(tmp_path), "KUBECONFIG": str(missing)})
    assert_one_line(result, preflight.ExitCode.KUBECONFIG, f"KUBECONFIG={missing} missing")


def test_kubeconfig_flag_naming_a_missing_file(tmp_path: Path) -> None:
    result = run_operator(f"--kubeconfig={tmp_path / 'missing.yaml'}", env={"HOME": str(tmp_path)})
    assert_one_line(result, preflight.ExitCode.KUBECONFIG, "missing.yaml does not exist")


def _kubeconfig(path: Path, server: str, *, context: str = "local") -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: local, cluster: {{server: "{server}"}}}}]
users: [{{name: me, user: {{token: not-a-real-token}}}}]
contexts: [{{name: {context}, context: {{cluster: local, user: me}}}}]
current-context: {context}
"""
    )
    return path


def test_unknown_context(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kc.yaml", "http://127.0.0.1:1")
    result = run_operator(f"--kubeconfig={kubeconfig}", "--context=prod", env={"HOME": str(tmp_path)})
    assert_one_line(result, preflight.ExitCode.KUBECONFIG, "context prod", "--kubeconfig/--context")


def test_unreachable_api_server(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        kubeconfig = _kubeconfig(tmp_path / "kc.yaml", f"https://127.0.0.1:{port}")
        result = run_operator(f"--kubeconfig={kubeconfig}", env={"HOME": str(tmp_path)})
    assert_one_line(
        result,
        preflight.ExitCode.UNREACHABLE,
        f"cannot reach the API server at https://127.0.0.1:{port}",
        "connection refused",
        "cluster is running",
    )


def test_the_documented_exit_codes_are_the_real_ones() -> None:
    documented = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\d)` \| (.+?) \|$", documented, re.MULTILINE))
    assert [int(code) for code in rows] == [int(code) for code in preflight.ExitCode]
    for line in cli.EXIT_CODES.splitlines()[1:]:
        code, meaning = line.split(maxsplit=1)
        assert rows[code].startswith(meaning.split(" (")[0][:30]), (code, rows[code], meaning)


# --------------------------------------------------------------------------------------------------
# Pure parts


def test_permissions_cover_every_served_namespace_and_the_operator_namespace() -> None:
    wanted = preflight.required_permissions(namespaces=["a", "b"], operator_namespace="ops", leader_elect=True)
    described = {p.describe() for p in wanted}
    for ns in ("a", "b"):
        assert f"watch changetriggeredjobs.triggers.changejob.dev in namespace {ns}" in described
        assert f"update changetriggeredjobs.triggers.changejob.dev/status in namespace {ns}" in described
        assert f"create jobs.batch in namespace {ns}" in described
        assert f"delete jobs.batch in namespace {ns}" in described
        assert f"create events in namespace {ns}" in described
    assert "get secrets kube-changejob-hash-key in namespace ops" in described
    assert "update leases.coordination.k8s.io in namespace ops" in described
    assert not any("all namespaces" in d for d in described)


def test_permissions_cluster_wide_without_election() -> None:
    wanted = preflight.required_permissions(namespaces=[], operator_namespace="ops", leader_elect=False)
    assert "list changetriggeredjobs.triggers.changejob.dev in all namespaces" in {p.describe() for p in wanted}
    assert not [p for p in wanted if p.resource == "leases"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "HTTPSConnectionPool(...): Max retries exceeded "
            "(Caused by NewConnectionError('[Errno 111] Connection refused'))",
            "connection refused",
        ),
        ("... [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed ...", "TLS certificate is not trusted"),
        ("Failed to resolve 'x' ([Errno -2] Name or service not known)", "unknown host name"),
        ("Read timed out. (read timeout=10.0)", "timed out"),
        ("something\n  else", "something else"),
    ],
)
def test_connection_reasons_are_short(message: str, reason: str) -> None:
    assert reason in preflight.connection_reason(message)


def test_problem_prints_its_message() -> None:
    problem = preflight.Problem(preflight.ExitCode.CRD, "the CRD is missing: install it")
    assert str(problem) == "the CRD is missing: install it"
    assert int(problem.code) == 6
    assert os.EX_OK == preflight.ExitCode.OK


def test_unparsable_kubeconfig(tmp_path: Path) -> None:
    broken = tmp_path / "kc.yaml"
    broken.write_text("clusters: [unclosed\n")
    result = run_operator(f"--kubeconfig={broken}", env={"HOME": str(tmp_path)})
    assert_one_line(result, preflight.ExitCode.KUBECONFIG, f"kubeconfig {broken}", "fix the file")
