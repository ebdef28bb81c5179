"""Suite-wide pytest configuration: command-line options, markers assigned by folder, the cluster fixtures.

tests/unit/ holds pure tests (marker `unit`, no cluster); tests/integration/ holds tests against a
real API server with the operator as a local process (marker `integration`); tests/security/ holds the
regression tests of security findings against the same cluster (marker `security`); tests/e2e/ installs the
chart and runs the operator image as Pods on the local cluster's real node (marker `e2e`). The
cluster fixtures both use live in tests/cluster_fixtures.py.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import pytest

import helpers  # tests/ is on pytest's pythonpath (pyproject.toml)
from cluster_fixtures import *  # noqa: F403 - registers cluster, api_client, namespace for every suite

TESTS_DIR = pathlib.Path(__file__).resolve().parent
FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "security": "security", "e2e": "e2e"}


def _add_option(parser: pytest.Parser, *names: str, **kwargs: object) -> None:
    """Add an option unless a plugin already did (pytest-kind-ng defines --kubeconfig and
    --keep-cluster with the same meaning)."""
    with contextlib.suppress(ValueError):
        parser.addoption(*names, **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The options that choose the cluster integration tests run against."""
    group = parser.getgroup("changejob", "kube-changejob test cluster")
    group.addoption(
        "--cluster-backend",
        choices=("kwok", "kind"),
        default=os.environ.get("CHANGEJOB_CLUSTER_BACKEND", "kwok"),
        help="kwok: the local control plane of tools/cluster.sh (default); "
        "kind: a kind cluster via pytest-kind-ng (needs Docker and a kind binary)",
    )
    _add_option(
        parser,
        "--kubeconfig",
        default=None,
        help="run integration tests against the existing cluster of this kubeconfig",
    )
    _add_option(
        parser,
        "--keep-cluster",
        action="store_true",
        help="do not delete a cluster the test session created",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the folder it lives in, so `-m unit` / `-m integration` select by kind."""
    del config
    for item in items:
        try:
            folder = pathlib.Path(item.path).resolve().relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        marker = FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front which cluster integration tests will use."""
    choice = helpers.choose_cluster(
        kubeconfig_option=config.getoption("kubeconfig"),
        backend_option=config.getoption("cluster_backend"),
    )
    if choice.kubeconfig is not None:
        return f"test cluster: {choice.backend} {choice.name} (kubeconfig {choice.kubeconfig})"
    return f"test cluster: {choice.backend} {choice.name} (booted on first use)"
