"""Fixtures for operator scenarios: the CRD installed once, an operator per test namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctj_helpers import Kube
from operator_proc import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"


@pytest.fixture(scope="session")
def crd(cluster: Any) -> None:
    """The CRD from crds/, applied and established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/changetriggeredjobs.triggers.changejob.dev"
    )


@pytest.fixture
def kube(cluster: Any, namespace: str, crd: None) -> Kube:
    def kubectl(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(*args, check=check, input=input)  # type: ignore[no-any-return]

    return Kube(kubectl=kubectl, namespace=namespace)


@pytest.fixture
def operator_factory(cluster: Any, namespace: str, crd: None, tmp_path: Path) -> Iterator[Any]:
    """Start operator processes for this test's namespace; all are stopped afterwards."""
    started: list[OperatorProcess] = []

    def start(
        *,
        extra: tuple[str, ...] = (),
        name: str = "operator",
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> OperatorProcess:
        proc = OperatorProcess(
            kubeconfig=str(cluster.kubeconfig), namespace=namespace, workdir=tmp_path, extra=extra, name=name, env=env
        )
        started.append(proc)
        return proc.start(wait_ready=wait_ready)

    yield start
    for proc in started:
        proc.stop()
    for proc in started:  # keep the logs of a failing test visible
        print(f"--- {proc.name} log (tail) ---\n{proc.logs()[-3000:]}")


@pytest.fixture
def operator(operator_factory: Any) -> OperatorProcess:
    """One operator for this test's namespace, ready."""
    proc: OperatorProcess = operator_factory()
    return proc
