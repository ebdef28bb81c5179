"""Fixtures for tests against a real API server, shared by tests/integration and tests/e2e (registered
in tests/conftest.py, so one session boots one cluster for both suites).

`cluster` (session): the cluster, booted once per session by tools/cluster.sh unless --kubeconfig or
KUBECONFIG names an existing one, or a kind cluster with --cluster-backend=kind.
`api_client` (session): a kubernetes ApiClient for that cluster, never the global default config.
`namespace` (function): a fresh namespace, deleted after the test.
The fixtures that run the operator itself live in tests/integration/operator_fixtures.py.
"""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from kubernetes.client import exceptions as kube_exceptions

import helpers


def _keep_cluster(pytest_config: pytest.Config) -> bool:
    return bool(pytest_config.getoption("keep_cluster")) or os.environ.get("CHANGEJOB_KEEP_CLUSTER") == "1"


def _cluster_sh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helpers.CLUSTER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CLUSTER_DIR": str(helpers.CLUSTER_DIR)},
    )


def _other_live_sessions(users: pathlib.Path) -> list[int]:
    """Process ids of other live test sessions registered as users of a cluster."""
    others = []
    for entry in users.glob("*"):
        pid = int(entry.name) if entry.name.isdigit() else -1
        if pid != os.getpid() and pathlib.Path(f"/proc/{pid}").exists():
            others.append(pid)
        elif pid != os.getpid():
            entry.unlink(missing_ok=True)
    return others


def _kwok_cluster(name: str, *, keep: bool) -> Iterator[helpers.Cluster]:
    """Boot (or reuse) the kwok cluster NAME.

    Afterwards the cluster is deleted only if this session created it and no other live session
    (another pytest on the same machine) registered as its user meanwhile.
    """
    existed = _cluster_sh("check", name, timeout=60).returncode == 0
    up = _cluster_sh("up", name)
    if up.returncode != 0:
        pytest.fail(f"tools/cluster.sh up {name} failed (exit {up.returncode}):\n{up.stderr}", pytrace=False)
    users = helpers.CLUSTER_DIR / "users" / name
    users.mkdir(parents=True, exist_ok=True)
    (users / str(os.getpid())).touch()
    kubeconfig = pathlib.Path(_cluster_sh("kubeconfig", name, timeout=30).stdout.strip())
    try:
        yield helpers.Cluster(name=name, kubeconfig=kubeconfig, backend="kwok", workdir=kubeconfig.parent)
    finally:
        (users / str(os.getpid())).unlink(missing_ok=True)
    if existed or keep or _other_live_sessions(users):
        return
    down = _cluster_sh("down", name, timeout=120)
    if down.returncode != 0:
        pytest.fail(f"tools/cluster.sh down {name} failed:\n{down.stderr}", pytrace=False)


def _docker_problem() -> str | None:
    """Why Docker cannot be used, or None if it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker command is not installed"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20s"
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`docker info` failed: {detail}"
    return None


def _kind_cluster(pytest_config: pytest.Config, name: str, *, keep: bool) -> Iterator[helpers.Cluster]:
    """A kind cluster through pytest-kind-ng; skipped (with the reason) where Docker or kind is missing."""
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(f"--cluster-backend=kind needs Docker: {problem}")
    kind_bin = pytest_config.getoption("kind_bin", default=None) or shutil.which("kind")
    if not kind_bin:
        pytest.skip("--cluster-backend=kind needs a kind binary (--kind-bin or kind on PATH); none is downloaded")
    from pytest_kind import KindCluster

    kind = KindCluster(name, kind_path=pathlib.Path(kind_bin), kubectl_path=helpers.TOOLS_BIN / "kubectl")
    kind.create()
    yield helpers.Cluster(name=name, kubeconfig=pathlib.Path(kind.kubeconfig_path).resolve(), backend="kind")
    if not keep:
        kind.delete()


def _external_cluster(choice: helpers.ClusterChoice) -> helpers.Cluster:
    """A cluster someone else runs; it must answer /readyz, or the session stops with the reason."""
    assert choice.kubeconfig is not None
    cluster = helpers.Cluster(name=choice.name, kubeconfig=choice.kubeconfig, backend="external")
    ready = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    if ready.returncode != 0:
        pytest.fail(f"the cluster of kubeconfig {choice.kubeconfig} is not ready: {ready.stderr}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[helpers.Cluster]:
    """The cluster of this test session (see the module docstring for how it is chosen)."""
    pytest_config = request.config
    choice = helpers.choose_cluster(
        kubeconfig_option=pytest_config.getoption("kubeconfig"),
        backend_option=pytest_config.getoption("cluster_backend"),
    )
    keep = _keep_cluster(pytest_config)
    if choice.backend == "external":
        yield _external_cluster(choice)
    elif choice.kubeconfig is not None:
        # A kubeconfig of a cluster tools/cluster.sh runs: use it as it is, never delete it.
        yield helpers.Cluster(
            name=choice.name, kubeconfig=choice.kubeconfig, backend="kwok", workdir=choice.kubeconfig.parent
        )
    elif choice.backend == "kind":
        yield from _kind_cluster(pytest_config, choice.name, keep=keep)
    else:
        yield from _kwok_cluster(choice.name, keep=keep)


@pytest.fixture(scope="session")
def api_client(cluster: helpers.Cluster) -> Iterator[client.ApiClient]:
    """An ApiClient built from the cluster's kubeconfig (the global default configuration stays untouched)."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


def _namespace_name(test_name: str) -> str:
    """A DNS-1123 label naming the test, unique per call: t-<test>-<random>."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: client.ApiClient) -> Iterator[str]:
    """A new namespace for one test, ready for pods (its default ServiceAccount exists); deleted after."""
    core = client.CoreV1Api(api_client)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"changejob.dev/test": "true"}))
    )
    try:
        helpers.wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=30,
            message=f"the default ServiceAccount of namespace {name}",
            ignoring=(kube_exceptions.ApiException,),
        )
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except kube_exceptions.ApiException as exc:
            if exc.status != 404:
                raise
