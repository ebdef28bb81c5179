"""Start-up errors a newcomer meets on a real cluster: one line saying what to do, the documented exit code.

Each test runs ``kube-changejob run`` as a user would and expects it to stop before starting any
watch: the operator's namespace missing (5), the CRD not installed (6), credentials without the
operator's RBAC (7). The opposite is shown too: with the chart's RBAC the same credentials pass every
check. The checks without a cluster (no kubeconfig, unreachable API server) are in
tests/unit/test_preflight.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rbac_helpers

import helpers
from changejob import preflight

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD_NAME = "changetriggeredjobs.triggers.changejob.dev"
CRD_PATH = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"


def run_operator(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "changejob.cli",
            "run",
            f"--kubeconfig={kubeconfig}",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        timeout=120,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: preflight.ExitCode, *fragments: str) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_operator_namespace(cluster: Any, crd: None) -> None:
    result = run_operator(cluster.kubeconfig, "--leader-election-namespace=no-such-namespace", "--leader-elect")
    assert_one_line(
        result,
        preflight.ExitCode.NAMESPACE,
        "the operator's namespace no-such-namespace does not exist",
        "kubectl create namespace no-such-namespace",
        "--leader-election-namespace",
    )
    # Nothing was created on the way.
    assert cluster.kubectl("get", "namespace", "no-such-namespace", check=False).returncode != 0


def test_missing_crd(cluster: Any, crd: None, namespace: str) -> None:
    """The shared CRD is deleted for this test and applied again after it (tests run one at a time)."""
    cluster.kubectl("delete", "crd", CRD_NAME, "--wait=true", timeout=120)
    try:
        helpers.wait_for(
            lambda: (
                cluster.kubectl("get", "--raw", "/apis/triggers.changejob.dev/v1alpha", check=False).returncode != 0
            ),
            timeout=30,
            message="the CRD's API to leave discovery",
        )
        result = run_operator(
            cluster.kubeconfig, f"--leader-election-namespace={namespace}", f"--namespaces={namespace}"
        )
        assert_one_line(
            result,
            preflight.ExitCode.CRD,
            f"the ChangeTriggeredJob CRD ({CRD_NAME}, version v1alpha) is not installed",
            "kubectl apply --server-side -f crds/triggers.changejob.dev_changetriggeredjobs.yaml",
        )
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
        helpers.wait_for(
            lambda: (
                cluster.kubectl("get", "--raw", "/apis/triggers.changejob.dev/v1alpha", check=False).returncode == 0
            ),
            timeout=30,
            message="the CRD's API to be served again",
        )


@pytest.fixture
def admin(cluster: Any) -> rbac_helpers.Kubectl:
    return rbac_helpers.Kubectl(binary=helpers.TOOLS_BIN / "kubectl", kubeconfig=Path(cluster.kubeconfig))


def test_rbac_denial_names_the_user_and_the_permission(
    admin: rbac_helpers.Kubectl, crd: None, namespace: str, tmp_path: Path
) -> None:
    admin("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = rbac_helpers.service_account_kubeconfig(
        admin=admin, namespace=namespace, service_account="nobody", path=tmp_path / "nobody.yaml"
    )
    result = run_operator(kubeconfig, f"--leader-election-namespace={namespace}", f"--namespaces={namespace}")
    line = assert_one_line(
        result,
        preflight.ExitCode.FORBIDDEN,
        f"user system:serviceaccount:{namespace}:nobody may not",
        "grant the operator's RBAC",
    )
    assert f"in namespace {namespace}" in line


def test_the_charts_rbac_passes_every_check(
    admin: rbac_helpers.Kubectl, cluster: Any, crd: None, namespace: str, tmp_path: Path
) -> None:
    """With the chart's grants (namespaced mode) the same start-up gets past the checks and runs."""
    rbac = rbac_helpers.ChartRbac(
        admin=admin,
        namespace=namespace,
        values={"watch": {"namespaces": [namespace]}},
        workdir=tmp_path,
    )
    rbac.apply()
    try:
        kubeconfig = rbac_helpers.service_account_kubeconfig(
            admin=admin, namespace=namespace, service_account=rbac.service_account, path=tmp_path / "sa.yaml"
        )
        rbac_helpers.wait_granted(
            lambda: admin.can_i("create", "jobs.batch", "-n", namespace, as_user=rbac.username),
            what="the chart's Role",
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "changejob.cli",
                "run",
                f"--kubeconfig={kubeconfig}",
                f"--leader-election-namespace={namespace}",
                f"--namespaces={namespace}",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=0",
                *rbac_helpers.chart_operator_args(),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        )
        try:
            helpers.wait_for(
                lambda: (
                    proc.poll() is None
                    and admin("get", "lease", "-n", namespace, "-o", "name", check=False).stdout.strip()
                ),
                timeout=60,
                message="the operator to pass its checks and take shard Leases",
            )
        finally:
            proc.terminate()
            output = proc.communicate(timeout=30)[0]
        assert proc.returncode == preflight.ExitCode.OK, output
        assert "may not" not in output
    finally:
        rbac.delete_cluster_scoped()
