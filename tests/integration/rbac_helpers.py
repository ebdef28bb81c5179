"""The Helm chart's RBAC on a real cluster: render it, apply only the RBAC, act as its ServiceAccount.

``ChartRbac`` renders the chart with ``helm template`` for a release in a test namespace, applies the
ServiceAccount, (Cluster)Roles and (Cluster)RoleBindings exactly as rendered (nothing else: no
Deployment, the operator runs as a local process) and deletes the cluster-scoped ones again.
``service_account_kubeconfig`` writes a kubeconfig that authenticates with a TokenRequest token of
that ServiceAccount, so whatever uses it (the operator, kubectl) gets exactly the chart's grants.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import helpers

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
CLUSTER_SCOPED_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding"})


def helm_binary() -> str:
    return helpers.pinned_tool("helm")


class Helm:
    """The pinned helm against a cluster, with its caches in a scratch directory."""

    def __init__(self, *, kubeconfig: str | Path, home: Path) -> None:
        self._binary = helm_binary()
        self._env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self._binary, *args], capture_output=True, text=True, env=self._env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


class Kubectl:
    """The built kubectl with one kubeconfig (the admin's or a ServiceAccount's)."""

    def __init__(self, *, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, check: bool = True, input_: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def json(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self(*args, "-o", "json").stdout)
        return loaded

    def can_i(self, *args: str, as_user: str | None = None) -> bool:
        """``kubectl auth can-i``; exits 1 for "no", so the answer is read from stdout."""
        who = [f"--as={as_user}"] if as_user else []
        return self("auth", "can-i", *args, *who, check=False).stdout.strip() == "yes"


def render_chart(*, release: str, namespace: str, values: Mapping[str, Any], workdir: Path) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` (a values file, so lists stay lists)."""
    values_file = workdir / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(workdir / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(workdir / "helm" / "config"),
        "HELM_DATA_HOME": str(workdir / "helm" / "data"),
    }
    result = subprocess.run(
        [helm_binary(), "template", release, str(CHART), "--namespace", namespace, "--values", str(values_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class ChartRbac:
    """The chart's ServiceAccount and RBAC for one release, applied to the cluster.

    The release name contains "kube-changejob", so every object is named like the documentation's
    (``<release>-manager-role``, ``<release>-controller-manager``) and a unique suffix keeps the
    cluster-scoped ones apart from other tests'.
    """

    def __init__(
        self, *, admin: Kubectl, namespace: str, values: Mapping[str, Any], workdir: Path, release: str | None = None
    ) -> None:
        self.admin = admin
        self.namespace = namespace
        self.release = release or f"kube-changejob-{uuid.uuid4().hex[:6]}"
        self.docs = render_chart(release=self.release, namespace=namespace, values=values, workdir=workdir)
        self.objects = [d for d in self.docs if d["kind"] in RBAC_KINDS]

    @property
    def service_account(self) -> str:
        (sa,) = [str(d["metadata"]["name"]) for d in self.objects if d["kind"] == "ServiceAccount"]
        return sa

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def named(self, kind: str, suffix: str) -> dict[str, Any]:
        """The rendered object of ``kind`` whose name is ``<release>-<suffix>``."""
        matches = [d for d in self.objects if d["kind"] == kind and d["metadata"]["name"] == f"{self.release}-{suffix}"]
        assert len(matches) == 1, f"{kind} {self.release}-{suffix} rendered {len(matches)} times"
        return matches[0]

    def apply(self) -> None:
        self.admin(
            "apply", "--server-side", "--field-manager=rbac-test", "-f", "-", input_=yaml.safe_dump_all(self.objects)
        )

    def delete_cluster_scoped(self) -> None:
        """Cluster-scoped objects outlive the test namespace: delete them explicitly."""
        cluster_scoped = [d for d in self.objects if d["kind"] in CLUSTER_SCOPED_KINDS]
        if cluster_scoped:
            self.admin(
                "delete",
                "--ignore-not-found",
                "--wait=false",
                "-f",
                "-",
                input_=yaml.safe_dump_all(cluster_scoped),
                check=False,
            )


def admin_cluster_entry(admin: Kubectl) -> tuple[str, str]:
    """The API server URL and base64 CA bundle of the admin kubeconfig's current context."""
    view = admin.json("config", "view", "--raw", "--minify", "--flatten")
    cluster = view["clusters"][0]["cluster"]
    return str(cluster["server"]), str(cluster["certificate-authority-data"])


def service_account_kubeconfig(
    *, admin: Kubectl, namespace: str, service_account: str, path: Path, duration: str = "1h"
) -> Path:
    """A kubeconfig for ``service_account`` with a TokenRequest token (no client certificate)."""
    token = admin("create", "token", service_account, "-n", namespace, f"--duration={duration}").stdout.strip()
    server, ca_data = admin_cluster_entry(admin)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def wait_granted(check: Callable[[], bool], *, what: str, timeout: float = 30.0) -> None:
    """RBAC changes reach the authorizer's cache within moments: poll instead of assuming."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not granted after {timeout}s: {what}")
        time.sleep(0.3)


def chart_operator_args(*, leader_elect: bool = True, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The flags the chart's Deployment passes that change which API calls the operator makes.

    Leader election (shard Leases) is on in the chart; ``OperatorProcess`` already sets the
    namespaces and the leader-election namespace like the chart does for watch.namespaces and the
    release namespace.
    """
    return (
        f"--leader-elect={'true' if leader_elect else 'false'}",
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=2s",
        "--shards=16",
        *extra,
    )
