"""The operator process serves its own admission webhook (no sidecar) with a self-signed certificate
it creates at runtime and whose CA it patches into the webhook configurations."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ctj_helpers import Kube, ctj_body, wait_until
from operator_proc import free_port
from rbac_helpers import render_chart

pytestmark = pytest.mark.integration


def _webhook_configuration(name: str, namespace: str, port: int, workdir: Path) -> str:
    """The chart's ValidatingWebhookConfiguration (default values) calling 127.0.0.1:<port>."""
    docs = render_chart(release="kube-changejob", namespace=namespace, values={}, workdir=workdir)
    (config,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    config["metadata"] = {"name": f"{name}-validating"}
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{hook['clientConfig']['service']['path']}"}
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return yaml.safe_dump(config)


@pytest.fixture
def webhook_operator(kube: Kube, operator_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    port = free_port()
    name = f"cj-{kube.ns}"
    # Registered before the operator starts, without a caBundle: the operator must fill it in.
    kube.run("apply", "-f", "-", input_=_webhook_configuration(name, kube.ns, port, tmp_path))
    try:
        proc = operator_factory(
            extra=(
                f"--webhook-port={port}",
                "--webhook-host=127.0.0.1",
                "--webhook-extra-sans=127.0.0.1",
                f"--webhook-config={name}-validating",
                f"--webhook-cert-dir={tmp_path / 'certs'}",
            )
        )
        yield proc, name
    finally:
        kube.run("delete", "validatingwebhookconfiguration", f"{name}-validating", "--ignore-not-found")


def test_operator_serves_webhook_with_runtime_certificate(kube: Kube, webhook_operator: tuple[Any, str]) -> None:
    _, name = webhook_operator
    config = kube.get("validatingwebhookconfiguration", f"{name}-validating", namespaced=False)
    assert config is not None
    bundles = [base64.b64decode(hook["clientConfig"]["caBundle"]) for hook in config["webhooks"]]
    assert len(bundles) == 2 and all(b"BEGIN CERTIFICATE" in ca for ca in bundles)
    secret = kube.get("secret", "kube-changejob-webhook-service-cert")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"

    def refused(name: str, ref: dict[str, str]) -> str:
        out = kube.run("apply", "-n", kube.ns, "-f", "-", check=False, input_=yaml.safe_dump(ctj_body(name, [ref])))
        assert out.returncode != 0
        return out.stderr

    # the CRD itself, no webhook involved
    assert "resource kind does not exist" in refused(
        "lower", {"apiVersion": "v1", "kind": "configmap", "name": "x", "namespace": kube.ns}
    )
    # kinds the admission policy does not know: the operator answers from discovery
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "x", "namespace": kube.ns}
    assert "resource kind does not exist: Widget (example.com/v1)" in refused("widget", widget)
    ctj = {"apiVersion": "triggers.changejob.dev/v1alpha", "kind": "ChangeTriggeredJob", "name": "x"}
    assert "namespace is required for namespaced resources" in refused("no-ns", ctj)
    service = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "name": "v1.", "namespace": kube.ns}
    assert "namespace must not be set for cluster-scoped resources" in refused("api-ns", service)

    kube.run("create", "configmap", "ok", "-n", kube.ns, "--from-literal=a=1")
    good = ctj_body(
        "good", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "ok", "namespace": kube.ns}], cooldown="0s"
    )
    kube.apply(good)
    kube.patch("configmap", "ok", {"data": {"a": "2"}})
    wait_until(lambda: kube.jobs("good"), what="job from an admitted CTJ")
