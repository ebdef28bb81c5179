"""Fixtures of the end-to-end suite: the operator as a user runs it, on the local cluster's real node.

`real_node` (session): real-node-0 joined to the session's cluster (tools/cluster.sh node-up) with the
project's images loaded (tools/image.sh: the Dockerfile built without a daemon or a registry, and
busybox:latest). Skipped, with the reason, only where this host cannot run containers (not Linux, not
root, no cgroups, ...); anything else that fails is an error. The node is stopped again at the end if
this session started it (the cluster fixture deletes the whole cluster anyway when it created it).

`e2e` (module): three namespaces for one test module, deleted afterwards: `operator` (the release;
Pod Security `restricted` enforced), `guide` (Pods run on the real node: label
changejob.dev/real-node=true, see tools/real-node.yaml) and `load` (Jobs for the kwok node).

`helm`: the pinned helm against the cluster, its caches in a scratch directory.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from e2e_helpers import IMAGE_SCRIPT, NODE_NAME, REAL_NODE_SCRIPT, Namespaces, RealNode, run_tool
from rbac_helpers import Helm, Kubectl

import helpers

# Setting up (first use: building the images, starting the node) takes minutes on a cold machine.
SETUP_TIMEOUT = 1800


def _script(*args: str | os.PathLike[str], timeout: float = SETUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return run_tool(*args, timeout=timeout)


def _must(what: str, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-40:])
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{tail}", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked host_state run first among the e2e tests: they compare the host before and after
    a cluster of their own, best done before the session's real node starts."""
    positions = [i for i, item in enumerate(items) if item.get_closest_marker("e2e")]
    ordered = sorted((items[i] for i in positions), key=lambda item: not item.get_closest_marker("host_state"))
    for i, item in zip(positions, ordered, strict=True):
        items[i] = item


@pytest.fixture(scope="session")
def host_can_run_containers() -> None:
    """Skip, with the reason, where this host cannot run a real node (tools/real-node.sh check-host)."""
    problem = _script(REAL_NODE_SCRIPT, "check-host", timeout=60)
    if problem.returncode != 0:
        pytest.skip(problem.stdout.strip() or problem.stderr.strip())


@pytest.fixture(scope="session")
def real_node(
    host_can_run_containers: None, cluster: helpers.Cluster, request: pytest.FixtureRequest
) -> Iterator[RealNode]:
    """real-node-0 in the session's cluster, with the project's images on it."""
    if not cluster.managed:
        pytest.skip(f"the e2e suite adds a real node to tools/cluster.sh's cluster, not to the {cluster.backend} one")
    existed = "Ready" in _script(REAL_NODE_SCRIPT, "status", cluster.name, timeout=60).stdout.split()
    _must("tools/cluster.sh node-up", _script(helpers.CLUSTER_SCRIPT, "node-up", cluster.name))
    _must("tools/image.sh build", _script(IMAGE_SCRIPT, "build"))
    _must("tools/image.sh load", _script(IMAGE_SCRIPT, "load", cluster.name))
    yield RealNode(name=NODE_NAME, cluster=cluster)
    keep = request.config.getoption("keep_cluster") or os.environ.get("CHANGEJOB_KEEP_CLUSTER") == "1"
    if not existed and not keep:
        _must("tools/cluster.sh node-down", _script(helpers.CLUSTER_SCRIPT, "node-down", cluster.name, timeout=300))


@pytest.fixture(scope="session")
def kubectl(cluster: helpers.Cluster) -> Kubectl:
    return Kubectl(binary=cluster.kubectl_path, kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="module")
def e2e(real_node: RealNode, kubectl: Kubectl) -> Iterator[Namespaces]:
    """The namespaces of one test module (see the module docstring)."""
    run = secrets.token_hex(3)
    spaces = Namespaces(operator=f"e2e-operator-{run}", guide=f"e2e-guide-{run}", load=f"e2e-load-{run}")
    labels = {
        spaces.operator: ["pod-security.kubernetes.io/enforce=restricted", "changejob.dev/real-node=true"],
        spaces.guide: ["changejob.dev/real-node=true"],
        spaces.load: [],
    }
    for name, extra in labels.items():
        kubectl("create", "namespace", name)
        kubectl("label", "namespace", name, "changejob.dev/test=true", *extra)
    try:
        yield spaces
    finally:
        for name in labels:
            kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def helm(cluster: helpers.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kubeconfig=cluster.kubeconfig, home=tmp_path_factory.mktemp("helm"))
