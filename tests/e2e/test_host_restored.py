"""`tools/cluster.sh down` leaves the host as it was before `tools/cluster.sh up --real-node`.

The test brings up a cluster of its own with its real node, runs a Pod that uses what Pods use (a
sandbox and its network namespace, a veth on the node's bridge, volumes, a log), and compares
snapshots of the host (tools/host-state.sh: kernel settings, nftables and iptables, links,
addresses, routes, mounts, cgroups, shared directories, runtime processes) taken before the cluster
and after `down`. A snapshot taken while the node runs must differ from the first, or the
comparison could not fail. It runs before the session's own real node starts (see conftest.py), so
the host it compares is quiet; other real nodes (other checkouts) are left out of the comparison.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import NODE_NAME, run_tool
from rbac_helpers import Kubectl

import helpers

pytestmark = [pytest.mark.e2e, pytest.mark.host_state, pytest.mark.timeout(1200)]

HOST_STATE = helpers.REPO_ROOT / "tools" / "host-state.sh"
NAME = "changejob-e2e-host"


def run(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_tool(*args, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "busy", "namespace": "changejob-real-node"},
    "spec": {
        "containers": [
            {
                "name": "busy",
                "image": "busybox:latest",
                "command": ["sh", "-c", "echo started; sleep 600"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 1,
    },
}


def test_cluster_down_leaves_the_host_as_before(host_can_run_containers: None, tmp_path: Path) -> None:
    node_dir = helpers.CLUSTER_DIR.resolve() / "nodes" / NAME
    before, during, after = tmp_path / "before", tmp_path / "during", tmp_path / "after"
    ok(run(HOST_STATE, "snapshot", before))
    try:
        ok(run(helpers.CLUSTER_SCRIPT, "up", NAME, "--real-node"))
        kubeconfig = Path(ok(run(helpers.CLUSTER_SCRIPT, "kubeconfig", NAME)).stdout.strip())
        kubectl = Kubectl(binary=helpers.TOOLS_BIN / "kubectl", kubeconfig=kubeconfig)
        kubectl("apply", "-f", "-", input_=json.dumps(POD))
        kubectl("wait", "--for=condition=Ready", "pod/busy", "-n", "changejob-real-node", "--timeout=120s", timeout=130)
        assert kubectl.json("get", "pod", "busy", "-n", "changejob-real-node")["spec"]["nodeName"] == NODE_NAME
        helpers.wait_for(lambda: "started" in kubectl("logs", "busy", "-n", "changejob-real-node").stdout, timeout=30)
        ok(run(HOST_STATE, "snapshot", during))
        changed = run(HOST_STATE, "diff", before, during, node_dir)
        assert changed.returncode == 1, "the host did not change while the node ran: the comparison proves nothing"
        added = [line for line in changed.stdout.splitlines() if line.startswith("+") and not line.startswith("+++")]
        node_id = hashlib.sha256(str(node_dir).encode()).hexdigest()[:8]
        for sign in (f"cj{node_id}", f"changejob-{node_id}", f"{node_dir}/"):  # bridge, cgroups, mounts
            assert any(sign in line for line in added), f"no {sign} in what the node added:\n{changed.stdout}"
    finally:
        down = run(helpers.CLUSTER_SCRIPT, "down", NAME, "--force", timeout=600)
    ok(down)
    ok(run(HOST_STATE, "snapshot", after))
    restored = run(HOST_STATE, "diff", before, after, node_dir)
    assert restored.returncode == 0, f"the host differs after `tools/cluster.sh down`:\n{restored.stdout}"
