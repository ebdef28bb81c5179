"""The operator process serves its own admission webhook (no sidecar) with a self-signed certificate
it creates at runtime and whose CA it patches into the webhook configurations."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from ctj_helpers import Kube, ctj_body, wait_until
from operator_proc import free_port

pytestmark = pytest.mark.integration


def _webhooks(name: str, namespace: str, port: int) -> str:
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    rules = [
        {
            "apiGroups": ["triggers.changejob.dev"],
            "apiVersions": ["v1alpha"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["changetriggeredjobs"],
        }
    ]

    def hook(path: str) -> dict[str, Any]:
        return {
            "name": f"{path.strip('/')}.changejob.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "namespaceSelector": selector,
            "rules": rules,
            "clientConfig": {"url": f"https://127.0.0.1:{port}{path}"},
        }

    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"{name}-validating"},
            "webhooks": [hook("/validate-ctj")],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": f"{name}-mutating"},
            "webhooks": [hook("/mutate-ctj")],
        },
    ]
    return yaml.safe_dump_all(docs)


@pytest.fixture
def webhook_operator(kube: Kube, operator_factory: Any, tmp_path: Any) -> Iterator[tuple[Any, str]]:
    port = free_port()
    name = f"cj-{kube.ns}"
    # Registered before the operator starts, without a caBundle: the operator must fill it in.
    kube.run("apply", "-f", "-", input_=_webhooks(name, kube.ns, port))
    try:
        proc = operator_factory(
            extra=(
                f"--webhook-port={port}",
                "--webhook-host=127.0.0.1",
                "--webhook-extra-sans=127.0.0.1",
                f"--webhook-config={name}-validating",
                f"--webhook-mutating-config={name}-mutating",
                f"--webhook-cert-dir={tmp_path / 'certs'}",
            )
        )
        yield proc, name
    finally:
        kube.run("delete", "validatingwebhookconfiguration", f"{name}-validating", "--ignore-not-found")
        kube.run("delete", "mutatingwebhookconfiguration", f"{name}-mutating", "--ignore-not-found")


def test_operator_serves_webhook_with_runtime_certificate(kube: Kube, webhook_operator: tuple[Any, str]) -> None:
    _, name = webhook_operator
    config = kube.get("validatingwebhookconfiguration", f"{name}-validating", namespaced=False)
    assert config is not None
    ca = base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
    assert b"BEGIN CERTIFICATE" in ca
    secret = kube.get("secret", "kube-changejob-webhook-service-cert")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"

    bad = ctj_body("bad-kind", [{"apiVersion": "v1", "kind": "configmap", "name": "x", "namespace": kube.ns}])
    out = kube.run("apply", "-n", kube.ns, "-f", "-", check=False, input_=yaml.safe_dump(bad))
    assert out.returncode != 0
    assert "resource kind does not exist" in out.stderr

    no_ns = ctj_body("no-ns", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}])
    out = kube.run("apply", "-n", kube.ns, "-f", "-", check=False, input_=yaml.safe_dump(no_ns))
    assert "namespace is required for namespaced resources" in out.stderr

    node_ns = ctj_body("node-ns", [{"apiVersion": "v1", "kind": "Node", "name": "kwok-node-0", "namespace": kube.ns}])
    out = kube.run("apply", "-n", kube.ns, "-f", "-", check=False, input_=yaml.safe_dump(node_ns))
    assert "namespace must not be set for cluster-scoped resources" in out.stderr

    kube.run("create", "configmap", "ok", "-n", kube.ns, "--from-literal=a=1")
    good = ctj_body(
        "good", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "ok", "namespace": kube.ns}], cooldown="0s"
    )
    kube.apply(good)
    kube.patch("configmap", "ok", {"data": {"a": "2"}})
    wait_until(lambda: kube.jobs("good"), what="job from an admitted CTJ")
