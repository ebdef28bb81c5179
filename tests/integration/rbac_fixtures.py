"""Fixtures for tests that run the operator with exactly the Helm chart's RBAC (see rbac_helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ctj_helpers import Kube
from operator_proc import OperatorProcess
from rbac_helpers import ChartRbac, Kubectl, chart_operator_args, service_account_kubeconfig, wait_granted

CTJ_RESOURCE = "changetriggeredjobs.triggers.changejob.dev"


@pytest.fixture
def admin(cluster: Any) -> Kubectl:
    """kubectl with the cluster's admin kubeconfig (sets up what the test needs, never the operator)."""
    return Kubectl(binary=Path(cluster.kubectl_path), kubeconfig=Path(cluster.kubeconfig))


@pytest.fixture
def admin_kube(admin: Kubectl, namespace: str, crd: None) -> Kube:
    def run(*args: str, check: bool = True, input: str | None = None) -> Any:
        return admin(*args, check=check, input_=input)

    return Kube(kubectl=run, namespace=namespace)


@pytest.fixture
def chart_rbac(admin: Kubectl, namespace: str, tmp_path: Path, crd: None) -> Iterator[Callable[..., ChartRbac]]:
    """Apply the chart's RBAC for a release in the test namespace; its cluster-scoped objects go after."""
    installed: list[ChartRbac] = []

    def install(values: Mapping[str, Any]) -> ChartRbac:
        rbac = ChartRbac(admin=admin, namespace=namespace, values=values, workdir=tmp_path)
        installed.append(rbac)
        rbac.apply()
        # The authorizer sees new bindings within moments; the operator must not race them at start.
        wait_granted(
            lambda: admin.can_i("create", "leases.coordination.k8s.io", "-n", namespace, as_user=rbac.username),
            what=f"{rbac.username} create leases",
        )
        wait_granted(
            lambda: admin.can_i("watch", CTJ_RESOURCE, "-n", namespace, as_user=rbac.username),
            what=f"{rbac.username} watch changetriggeredjobs",
        )
        return rbac

    yield install
    for rbac in installed:
        rbac.delete_cluster_scoped()


@pytest.fixture
def chart_operator(admin: Kubectl, namespace: str, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator as the release's ServiceAccount (token auth, no admin credentials)."""
    started: list[OperatorProcess] = []

    def start(rbac: ChartRbac, *, extra: tuple[str, ...] = (), name: str = "operator") -> OperatorProcess:
        kubeconfig = service_account_kubeconfig(
            admin=admin,
            namespace=namespace,
            service_account=rbac.service_account,
            path=tmp_path / f"{name}-sa.kubeconfig",
        )
        proc = OperatorProcess(
            kubeconfig=str(kubeconfig),
            namespace=namespace,
            workdir=tmp_path,
            extra=chart_operator_args(extra=extra),
            name=name,
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
    for proc in started:
        print(f"--- {proc.name} log (tail) ---\n{proc.logs()[-3000:]}")
