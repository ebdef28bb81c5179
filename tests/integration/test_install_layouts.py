"""Install layouts on the real local control plane: adoption by Helm, and two releases side by side.

- ``kubectl apply -k config/default`` (dist/install.yaml), then ``helm install --take-ownership``:
  Helm adopts every object without ``--force-conflicts``.
- Two releases in two namespaces, each watching only its own namespace, one owning the CRD: both
  install, and each release's operator (run here as a process with exactly that release's
  ServiceAccount token) handles its own ChangeTriggeredJobs and cannot touch the other's.

No ChangeTriggeredJob is written while a release's webhook configuration exists: no operator Pod
serves it on the fake node, and the API server would try to reach the Service's cluster address.
The admission policies and the CRD are kept on uninstall (crds.keep); each test deletes its
policies itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess
from rbac_helpers import Kubectl, chart_operator_args, service_account_kubeconfig, wait_granted
from test_chart_install import CHART, CRD_NAME, Helm, delete_admission_policies, kubectl_json

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist" / "install.yaml"
DIST_RELEASE = "kube-changejob"
DIST_NAMESPACE = "kube-changejob-system"


@pytest.fixture
def helm(cluster: Any, tmp_path: Path) -> Helm:
    return Helm(kubeconfig=cluster.kubeconfig, home=tmp_path / "helm")


def dist_objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DIST.read_text(encoding="utf-8")) if d]


def test_a_kubectl_install_is_adopted_by_helm_without_forcing(helm: Helm, admin: Kubectl) -> None:
    if admin("get", "namespace", DIST_NAMESPACE, "--ignore-not-found").stdout.strip():
        pytest.fail(f"namespace {DIST_NAMESPACE} exists already: this test installs there and deletes it")
    docs = dist_objects()
    assert not [d for d in docs if "app.kubernetes.io/managed-by" in (d["metadata"].get("labels") or {})]
    admin("apply", "-k", str(REPO / "config" / "default"))
    try:
        deployment = kubectl_json(
            admin, "get", "deployment", "-n", DIST_NAMESPACE, f"{DIST_RELEASE}-controller-manager"
        )
        assert "app.kubernetes.io/managed-by" not in deployment["metadata"]["labels"]
        # No --force-conflicts: every field Helm sends agrees with what kubectl stored.
        helm("install", DIST_RELEASE, str(CHART), "--namespace", DIST_NAMESPACE, "--take-ownership")
        for doc in docs:
            if doc["kind"] == "Namespace":
                continue
            where = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
            live = kubectl_json(admin, "get", doc["kind"], doc["metadata"]["name"], *where)
            assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", doc["kind"]
            assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == DIST_RELEASE, doc["kind"]
        # The adopted release upgrades; kubectl's field manager still co-owns what it set, so the
        # first upgrade that changes such a value takes it over with --force-conflicts, once.
        helm("upgrade", DIST_RELEASE, str(CHART), "--namespace", DIST_NAMESPACE)
        changed = ("--namespace", DIST_NAMESPACE, "--set", "replicaCount=3")
        assert helm("upgrade", DIST_RELEASE, str(CHART), *changed, check=False).returncode != 0
        helm("upgrade", DIST_RELEASE, str(CHART), *changed, "--force-conflicts")
        helm("upgrade", DIST_RELEASE, str(CHART), "--namespace", DIST_NAMESPACE, "--set", "replicaCount=4")
        deployment = kubectl_json(
            admin, "get", "deployment", "-n", DIST_NAMESPACE, f"{DIST_RELEASE}-controller-manager"
        )
        assert deployment["spec"]["replicas"] == 4
    finally:
        helm("uninstall", DIST_RELEASE, "--namespace", DIST_NAMESPACE, check=False)
        admin(
            "delete",
            "--ignore-not-found",
            "-f",
            "-",
            input_=yaml.safe_dump_all([d for d in docs if d["kind"] not in ("CustomResourceDefinition", "Namespace")]),
            check=False,
        )
        delete_admission_policies(admin, DIST_RELEASE)
        admin("delete", "namespace", DIST_NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
    admin("get", "crd", CRD_NAME)  # kept


class Release:
    """One release of the chart that watches only its own namespace."""

    def __init__(self, *, helm: Helm, admin: Kubectl, owns_crd: bool) -> None:
        self.name = f"team-{uuid.uuid4().hex[:6]}"
        self.namespace = f"{self.name}-ns"
        self.helm = helm
        self.admin = admin
        self.owns_crd = owns_crd

    @property
    def prefix(self) -> str:
        return f"{self.name}-kube-changejob"

    def install(self) -> None:
        values = {"watch": {"namespaces": [self.namespace]}, "crds": {"install": self.owns_crd}}
        args = ["install", self.name, str(CHART), "--namespace", self.namespace, "--create-namespace"]
        # The CRD exists already in this shared test cluster, applied by other tests with other label
        # values: the owning release adopts it and takes those fields over.
        args += ["--take-ownership", "--set-json", f"watch={json.dumps(values['watch'])}"]
        if self.owns_crd:
            args.append("--force-conflicts")
        args += ["--set-json", f"crds={json.dumps(values['crds'])}"]
        self.helm(*args)

    def drop_webhook_configuration(self) -> None:
        """No operator Pod runs on the fake node: the API server must not try to call its Service."""
        self.admin(
            "delete", "validatingwebhookconfiguration", f"{self.prefix}-validating-webhook", "--ignore-not-found"
        )

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--namespace", self.namespace, check=False)
        delete_admission_policies(self.admin, self.name)
        self.admin("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=false", check=False)

    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.prefix}-controller-manager"

    def operator(self, workdir: Path) -> OperatorProcess:
        """The operator with exactly this release's grants, as its Deployment would run it."""
        wait_granted(
            lambda: self.admin.can_i(
                "create", "leases.coordination.k8s.io", "-n", self.namespace, as_user=self.service_account()
            ),
            what=f"{self.name} leases",
        )
        kubeconfig = service_account_kubeconfig(
            admin=self.admin,
            namespace=self.namespace,
            service_account=f"{self.prefix}-controller-manager",
            path=workdir / f"{self.name}.kubeconfig",
        )
        proc = OperatorProcess(
            kubeconfig=str(kubeconfig),
            namespace=self.namespace,
            workdir=workdir,
            extra=chart_operator_args(),
            name=self.name,
        )
        return proc.start()


@pytest.fixture
def two_releases(helm: Helm, admin: Kubectl, crd: None) -> Iterator[tuple[Release, Release]]:
    first, second = Release(helm=helm, admin=admin, owns_crd=True), Release(helm=helm, admin=admin, owns_crd=False)
    try:
        yield first, second
    finally:
        for release in (first, second):
            release.uninstall()


def test_two_releases_with_disjoint_namespaces_install_and_work_side_by_side(
    two_releases: tuple[Release, Release], admin: Kubectl, tmp_path: Path
) -> None:
    first, second = two_releases
    first.install()
    second.install()  # no conflict: every cluster-scoped name carries the release's prefix
    crd = kubectl_json(admin, "get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == first.name
    for release in (first, second):
        release.drop_webhook_configuration()
    # Each operator may act only where its release watches.
    assert admin.can_i("create", "jobs.batch", "-n", first.namespace, as_user=first.service_account())
    assert not admin.can_i("create", "jobs.batch", "-n", second.namespace, as_user=first.service_account())
    assert not admin.can_i("list", "configmaps", "-n", first.namespace, as_user=second.service_account())

    kubes = {}
    for release in (first, second):
        kube = Kube(
            kubectl=lambda *a, check=True, input=None: admin(*a, check=check, input_=input), namespace=release.namespace
        )
        kube.run("create", "configmap", "settings", "-n", release.namespace, "--from-literal=v=1")
        ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "namespace": release.namespace}]
        kube.apply(ctj_body("sync", ref, cooldown="0s"))
        kubes[release.name] = kube

    operators = {release.name: release.operator(tmp_path) for release in (first, second)}
    try:
        for release in (first, second):
            kube = kubes[release.name]
            wait_until(baseline_recorded(kube, "sync"), timeout=60, what=f"{release.name} baseline")
            kube.patch("configmap", "settings", {"data": {"v": "2"}})
            wait_until(lambda kube=kube: kube.jobs("sync"), timeout=60, what=f"a Job in {release.namespace}")
        # With the second operator stopped, nothing acts on the second namespace any more.
        operators[second.name].stop()
        kubes[second.name].patch("configmap", "settings", {"data": {"v": "3"}})
        kubes[first.name].patch("configmap", "settings", {"data": {"v": "3"}})
        wait_until(lambda: len(kubes[first.name].jobs("sync")) == 2, timeout=60, what="the first release's second Job")
        assert len(kubes[second.name].jobs("sync")) == 1
        assert "Forbidden" not in operators[first.name].logs()
    finally:
        for proc in operators.values():
            proc.stop()
