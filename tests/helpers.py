"""Helpers shared by the test suites: polling, and the handle on the cluster the tests run against.

Nothing here fakes Kubernetes: `Cluster` points at a real API server (the local kwok control plane
booted by tools/cluster.sh, a kind cluster, or one named by a kubeconfig).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS_BIN = pathlib.Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools")) / "bin"
CLUSTER_SCRIPT = REPO_ROOT / "tools" / "cluster.sh"
CLUSTER_DIR = pathlib.Path(os.environ.get("CLUSTER_DIR", REPO_ROOT / ".cluster"))
DEFAULT_CLUSTER_NAME = "changejob-test"

# The fake node of the kwok cluster (tools/cluster.sh) and the pod-template hooks its Stages honour
# (tools/kwokctl.yaml): the label makes a pod fail, the annotation keeps it Running for a while.
KWOK_NODE_NAME = "kwok-node-0"
FAIL_LABEL = "changejob.dev/test-fail"
DURATION_ANNOTATION = "changejob.dev/test-duration"


@dataclasses.dataclass(frozen=True)
class ClusterChoice:
    """Which cluster a session uses: `backend` is "kwok", "kind" or "external"."""

    backend: str
    name: str
    kubeconfig: pathlib.Path | None = None


def pinned_tool(name: str, *, how: str | None = None) -> str:
    """Path of a tool: $TOOLS_DIR/bin (the pinned builds) first, then PATH.

    A missing tool skips the test on a developer's machine and fails it in CI, where every tool is
    built. ``how`` says how to get it (default: ``tools/build.sh NAME``).
    """
    local = TOOLS_BIN / name
    found = str(local) if os.access(local, os.X_OK) else shutil.which(name)
    if found:
        return found
    how = how or f"build it with: tools/build.sh {name}"
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI ({how})")
    pytest.skip(f"{name} is not available ({how})")


def choose_cluster(*, kubeconfig_option: str | None, backend_option: str) -> ClusterChoice:
    """An explicit --kubeconfig wins, then an existing file named by KUBECONFIG, then the backend.

    A kubeconfig inside $CLUSTER_DIR/clusters/NAME/ belongs to a cluster tools/cluster.sh runs, so it
    is treated as that kwok cluster (its processes can be inspected and restarted).
    """
    path: pathlib.Path | None = None
    if kubeconfig_option:
        path = pathlib.Path(kubeconfig_option).expanduser()
    elif os.environ.get("KUBECONFIG"):
        candidate = pathlib.Path(os.environ["KUBECONFIG"].split(os.pathsep)[0]).expanduser()
        if candidate.is_file():
            path = candidate
    if path is not None:
        resolved = path.resolve()
        clusters = (CLUSTER_DIR / "clusters").resolve()
        if resolved.parent.parent == clusters and resolved.name == "kubeconfig.yaml":
            return ClusterChoice(backend="kwok", name=resolved.parent.name, kubeconfig=resolved)
        return ClusterChoice(backend="external", name=str(path), kubeconfig=path)
    name = os.environ.get("CHANGEJOB_CLUSTER_NAME", DEFAULT_CLUSTER_NAME)
    return ClusterChoice(backend=backend_option, name=name)


class WaitTimeoutError(AssertionError):
    """`wait_for` gave up; an AssertionError so pytest reports it as a plain test failure."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.2,
    *,
    message: str | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    Polling, not sleeping a fixed time, keeps tests fast when the cluster is fast and patient when it
    is slow. Exceptions of the types in `ignoring` count as "not yet" (for example a 404 before an
    object appears); any other exception propagates at once. On timeout raises `WaitTimeoutError`
    naming the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignoring as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {what}; last result: {last!r}")
        time.sleep(interval)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The Kubernetes cluster a test session runs against.

    `backend` is "kwok" (booted by tools/cluster.sh; `workdir` holds its pids, logs and pki),
    "kind", or "external" (named by --kubeconfig or KUBECONFIG; never modified beyond what tests
    create).
    """

    name: str
    kubeconfig: pathlib.Path
    backend: str
    workdir: pathlib.Path | None = None
    kubectl_path: pathlib.Path = TOOLS_BIN / "kubectl"

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; `input` is fed to its stdin, output captured as text."""
        return subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def managed(self) -> bool:
        """True when tools/cluster.sh runs this cluster, so its components can be stopped and started."""
        return self.backend == "kwok"

    def component_pids(self) -> dict[str, int]:
        """The live process id of each control-plane component (kwok backend only)."""
        if self.workdir is None:
            raise RuntimeError(f"cluster {self.name} ({self.backend}) has no local processes")
        pids: dict[str, int] = {}
        for pidfile in sorted((self.workdir / "pids").glob("*.pid")):
            pid = int(pidfile.read_text().strip())
            if pathlib.Path(f"/proc/{pid}").exists():
                pids[pidfile.stem] = pid
        return pids

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop only kube-apiserver: SIGTERM with a short grace period, or SIGKILL if `kill`."""
        self._cluster_sh("apiserver-stop", *(["--kill"] if kill else []))

    def start_apiserver(self) -> None:
        """Start whatever component is not running (normally kube-apiserver); wait for /readyz."""
        self._cluster_sh("apiserver-start")

    def restart_apiserver(self, *, kill: bool = False) -> None:
        """Stop and start kube-apiserver; etcd and the other components keep running."""
        self._cluster_sh("apiserver-restart", *(["--kill"] if kill else []))

    def _cluster_sh(self, command: str, *args: str) -> None:
        if not self.managed or self.workdir is None:
            raise RuntimeError(f"cluster {self.name} ({self.backend}) is not run by tools/cluster.sh")
        env = {**os.environ, "CLUSTER_DIR": str(self.workdir.parent.parent)}
        subprocess.run([str(CLUSTER_SCRIPT), command, self.name, *args], check=True, env=env, timeout=120)
