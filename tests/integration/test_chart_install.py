"""The Helm chart and the CRD against the real local control plane.

Each test installs under its own release name and namespace, so the cluster-scoped objects (RBAC,
webhook configuration, admission policies) never collide with another test's. The webhook
configuration is limited to the test's own namespace with a namespaceSelector, and no test here
writes a ChangeTriggeredJob while one exists: no operator serves it (the fake node runs no
containers), and the API server would try to reach the Service's address. The admission policies
and the CRD are kept on uninstall (crds.keep), so each test deletes its policies itself; the CRD is
shared by the whole cluster and taken over with --take-ownership when another test applied it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from rbac_helpers import Helm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
CRD_PATH = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
CRD_NAME = "changetriggeredjobs.triggers.changejob.dev"

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def only_this_namespace(namespace: str) -> str:
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return f"webhook.namespaceSelector={json.dumps(selector)}"


def retry(fn: Callable[[], subprocess.CompletedProcess[str]], *, timeout: float = 30.0) -> str:
    """Run ``fn`` until it exits 0 (discovery and RBAC caches take a moment); return its stdout."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"still failing after {timeout}s: {result.stderr or result.stdout}")
        time.sleep(0.5)


@pytest.fixture
def helm(cluster: Any, tmp_path: Path) -> Helm:
    return Helm(kubeconfig=cluster.kubeconfig, home=tmp_path / "helm")


@pytest.fixture
def kubectl(cluster: Any) -> Kubectl:
    run: Kubectl = cluster.kubectl
    return run


def kubectl_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(kubectl(*args, "-o", "json").stdout)
    return loaded


def wait_established(kubectl: Kubectl) -> None:
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")


def can_i(kubectl: Kubectl, who: str, *args: str) -> bool:
    result = kubectl("auth", "can-i", *args, f"--as={who}", check=False)
    return result.stdout.strip() == "yes"


@pytest.fixture
def release_namespace(kubectl: Kubectl) -> Iterator[str]:
    namespace = unique("ctj-chart")
    yield namespace
    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def delete_admission_policies(kubectl: Kubectl, release: str) -> int:
    """Delete the release's admission policies and bindings (kept on uninstall); how many there were."""
    names = kubectl(
        "get",
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
        check=False,
    ).stdout.split()
    if names:
        kubectl("delete", "--ignore-not-found", *names, check=False)
    return len(names)


def test_helm_install(helm: Helm, kubectl: Kubectl, release_namespace: str) -> None:
    release = unique("it")
    prefix = f"{release}-kube-changejob"
    # --take-ownership/--force-conflicts: the CRD may already exist, applied by another test.
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--create-namespace",
        "--take-ownership",
        "--force-conflicts",
        "--set-json",
        only_this_namespace(release_namespace),
    )
    try:
        wait_established(kubectl)
        crd = kubectl_json(kubectl, "get", "crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"]["versions"][0]["name"] == "v1alpha"

        ns = ("-n", release_namespace)
        deployment = kubectl_json(kubectl, "get", "deployment", f"{prefix}-controller-manager", *ns)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{prefix}-controller-manager"
        for kind, name in (
            ("serviceaccount", f"{prefix}-controller-manager"),
            ("service", f"{prefix}-webhook-service"),
            ("role", f"{prefix}-leader-election-role"),
            ("poddisruptionbudget", f"{prefix}-controller-manager"),
        ):
            kubectl("get", kind, name, *ns)
        for kind, name in (
            ("clusterrole", f"{prefix}-manager-role"),
            ("clusterrolebinding", f"{prefix}-manager-rolebinding"),
            ("clusterrole", f"{prefix}-ctj-viewer"),
            ("validatingwebhookconfiguration", f"{prefix}-validating-webhook"),
            ("validatingadmissionpolicy", f"{prefix}-ctj-tenancy"),
            ("validatingadmissionpolicybinding", f"{prefix}-ctj-tenancy"),
        ):
            kubectl("get", kind, name)

        # The API server enforces the grants as rendered.
        sa = f"system:serviceaccount:{release_namespace}:{prefix}-controller-manager"
        assert can_i(kubectl, sa, "list", "configmaps", "--all-namespaces")
        assert can_i(kubectl, sa, "watch", "changetriggeredjobs.triggers.changejob.dev", "--all-namespaces")
        assert can_i(
            kubectl, sa, "update", "changetriggeredjobs.triggers.changejob.dev", "-n", "default", "--subresource=status"
        )
        assert not can_i(
            kubectl, sa, "patch", "changetriggeredjobs.triggers.changejob.dev", "-n", "default", "--subresource=status"
        )
        assert not can_i(kubectl, sa, "create", "changetriggeredjobs.triggers.changejob.dev", "-n", "default")
        assert can_i(kubectl, sa, "create", "jobs.batch", "-n", "default")
        assert can_i(kubectl, sa, "create", "leases.coordination.k8s.io", "-n", release_namespace)
        assert not can_i(kubectl, sa, "create", "leases.coordination.k8s.io", "-n", "default")
        assert not can_i(kubectl, sa, "delete", "secrets", "-n", "default")
        assert not can_i(kubectl, sa, "list", "services", "--all-namespaces")
        assert can_i(kubectl, sa, "patch", f"validatingwebhookconfigurations/{prefix}-validating-webhook")
        assert not can_i(kubectl, sa, "patch", "validatingwebhookconfigurations/someone-elses")

        explained = retry(lambda: kubectl("explain", "ctj.spec.resources.fields", check=False))
        assert "kubectl JSONPath expressions without braces" in " ".join(explained.split())

        status = helm("status", release, "--namespace", release_namespace).stdout
        assert "rollout status" in status
    finally:
        helm("uninstall", release, "--namespace", release_namespace, check=False)
        kept = delete_admission_policies(kubectl, release)
    kubectl("get", "crd", CRD_NAME)  # kept on uninstall
    assert kept == 6  # the policies and their bindings are kept with it
    gone = kubectl("get", "clusterrole", f"{prefix}-manager-role", "--ignore-not-found").stdout
    assert gone.strip() == ""


def test_template_applies_server_side_in_a_fresh_namespace(
    helm: Helm, kubectl: Kubectl, release_namespace: str
) -> None:
    release = unique("tpl")
    kubectl("create", "namespace", release_namespace)
    rendered = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--set",
        "webhook.certManager.enabled=false",
        "--set",
        "networkPolicy.enabled=true",
        "--set-json",
        only_this_namespace(release_namespace),
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    # The shared CRD may be owned by another applier with other label values: force it. Everything
    # else is this release's own and must apply without any conflict.
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(crds),
    )
    wait_established(kubectl)
    kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", "-", input=yaml.safe_dump_all(rest))
    try:
        live = json.loads(kubectl("get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(rest)).stdout)
        assert sorted((d["kind"], d["metadata"]["name"]) for d in live["items"]) == sorted(
            (d["kind"], d["metadata"]["name"]) for d in rest
        )
        assert {d["metadata"]["labels"]["app.kubernetes.io/instance"] for d in live["items"]} == {release}
        # Applying the same render again would change nothing: no perpetual diff for GitOps tools.
        diff = kubectl(
            "diff",
            "--server-side",
            "--field-manager=chart-test",
            "-f",
            "-",
            input=yaml.safe_dump_all(rest),
            check=False,
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
    finally:
        cluster_scoped = [d for d in rest if "namespace" not in d["metadata"]]
        kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            input=yaml.safe_dump_all(cluster_scoped),
            check=False,
        )


def ctj(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobTemplate": {
            "spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}
            }
        },
        "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": namespace}],
    }
    body.update(spec)
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def test_the_crd_schema_on_the_api_server(kubectl: Kubectl, release_namespace: str) -> None:
    kubectl("apply", "-f", str(CRD_PATH))
    wait_established(kubectl)
    kubectl("create", "namespace", release_namespace)

    def create(obj: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False)

    created = retry(lambda: create(ctj("defaults", release_namespace)))
    spec = json.loads(created)["spec"]
    assert (spec["condition"], spec["cooldown"], spec["history"]) == ("Any", "60s", 5)
    assert spec["resources"][0]["fields"] == ["*"]

    node = {"apiVersion": "v1", "kind": "Node", "name": "worker-1", "fields": ["metadata.labels"]}
    assert (
        create(
            ctj("cluster-scoped", release_namespace, resources=[node], cooldown="1h30m", condition="All", history=10)
        ).returncode
        == 0
    )

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": release_namespace}
    no_restart_policy = ctj("no-restart", release_namespace)
    del no_restart_policy["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"]
    rejected = {
        "spec.cooldown": ctj("bad-cooldown", release_namespace, cooldown="5x"),
        "spec.condition": ctj("bad-condition", release_namespace, condition="any"),
        "spec.history": ctj("bad-history", release_namespace, history=0),
        "spec.resources": ctj("no-resources", release_namespace, resources=[]),
        "must not name the same object twice": ctj("twice", release_namespace, resources=[cm, cm]),
        "at most 63 characters": ctj("x" * 64, release_namespace),
        "restartPolicy": no_restart_policy,
        "Duplicate value": ctj("dup-fields", release_namespace, resources=[{**cm, "fields": ["data", "data"]}]),
        "spec.resources[0].kind": ctj("lower-kind", release_namespace, resources=[{**cm, "kind": "config map"}]),
    }
    for needle, obj in rejected.items():
        result = create(obj)
        assert result.returncode != 0, needle
        assert needle in result.stderr, result.stderr
