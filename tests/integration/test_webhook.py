"""The admission webhook against the real API server.

The webhook server runs in this process on 127.0.0.1 with the operator-managed self-signed certificate
(a Secret in the test namespace, the caBundle patched in by ``certstore``), and is registered as the
chart renders it without the admission policy (``admissionPolicy.enabled=false``: the webhook checks
every spec change, tenancy included) but with ``clientConfig.url`` and a namespaceSelector for the
test namespace only, so no other test sees it. The built kubectl then talks to the API server, which
calls the webhook; discovery, access reviews and the job-template dry run are real API calls.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from rbac_helpers import render_chart

from changejob.kube import access, certstore, discovery, transport
from changejob.webhook import admission, certs, server

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
SERVICE = "kube-changejob-webhook"

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass
class Recorder:
    """The real Admission handler, remembering (path, operation, name) of each review it answered."""

    handler: admission.Admission
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, path: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        obj = request.get("object") or request.get("oldObject") or {}
        name = str((obj.get("metadata") or {}).get("name") or request.get("name") or "")
        self.calls.append((path, str(request.get("operation")), name))
        return self.handler(path, request)


@dataclass
class Webhook:
    namespace: str
    kubectl: Kubectl
    recorder: Recorder
    server: server.WebhookServer
    keeper: certs.SelfSigned
    store: certstore.SecretStore
    validating: str

    def create(
        self, manifest: str, *, as_user: str | None = None, check: bool = False, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "-n", self.namespace, "-f", "-"]
        if as_user:
            args.insert(0, f"--as={as_user}")
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, check=check, input=manifest)


def webhook_configuration(*, namespace: str, port: int, name: str, workdir: Path) -> str:
    """The chart's ValidatingWebhookConfiguration calling 127.0.0.1:<port>, scoped to ``namespace``."""
    docs = render_chart(
        release="kube-changejob",
        namespace=namespace,
        values={"admissionPolicy": {"enabled": False}},
        workdir=workdir,
    )
    (config,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    config["metadata"] = {"name": name}
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}"}
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return yaml.safe_dump(config)


def ctj_yaml(name: str, resources: str, *, extra_spec: str = "", image: str = "busybox:latest") -> str:
    """A CTJ manifest; ``resources`` is the YAML list under spec.resources (indented by 2)."""
    return textwrap.dedent("""\
        apiVersion: triggers.changejob.dev/v1alpha
        kind: ChangeTriggeredJob
        metadata:
          name: {name}
        spec:
          jobTemplate:
            spec:
              template:
                spec:
                  containers:
                  - name: hello
                    image: {image}
                  restartPolicy: Never
          resources:
        {resources}{extra}""").format(
        name=name,
        image=image,
        resources=textwrap.indent(textwrap.dedent(resources), "  "),
        extra=textwrap.dedent(extra_spec),
    )


BAD_KIND = """\
- apiVersion: v1
  kind: configmap
  name: my-config
  namespace: {ns}
"""
# A kind no API server serves: only the webhook (discovery) can tell.
UNKNOWN_KIND = """\
- apiVersion: example.com/v1
  kind: Widget
  name: my-widget
  namespace: {ns}
"""


def wait_until(check: Callable[[], bool], *, timeout: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def webhook(cluster: Any, api_client: Any, namespace: str, tmp_path: Path) -> Iterator[Webhook]:
    kubectl: Kubectl = cluster.kubectl
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/changetriggeredjobs.triggers.changejob.dev",
    )
    validating = f"ctj-validate-{namespace}"
    store = certstore.SecretStore(api_client, namespace=namespace, name=f"{SERVICE}-cert")
    keeper = certs.SelfSigned(
        store=store,
        webhooks=certstore.WebhookConfigs(api_client, validating=validating, mutating=None),
        names=certs.service_names(service=SERVICE, namespace=namespace, loopback=True),
        cert_dir=tmp_path / "certs",
    )
    keeper.refresh()  # creates the Secret and the files; the configurations do not exist yet
    recorder = Recorder(
        admission.Admission(
            resolver=discovery.Discovery(transport.Transport(api_client)),
            access=access.SubjectAccessChecker(api_client),
            dry_run_job=access.dry_run_job(api_client),
            dry_run_namespace=namespace,  # the operator's namespace; here the test's
        )
    )
    webhook_server = server.WebhookServer(
        host="127.0.0.1",
        port=0,
        cert_file=keeper.files.cert_file,
        key_file=keeper.files.key_file,
        handler=recorder,
    )
    webhook_server.start()
    hook = Webhook(
        namespace=namespace,
        kubectl=kubectl,
        recorder=recorder,
        server=webhook_server,
        keeper=keeper,
        store=store,
        validating=validating,
    )
    try:
        kubectl(
            "apply",
            "-f",
            "-",
            input=webhook_configuration(
                namespace=namespace, port=webhook_server.port, name=validating, workdir=tmp_path
            ),
        )
        keeper.refresh()  # now patches the caBundle into both webhooks
        bad = ctj_yaml("probe", UNKNOWN_KIND.format(ns=namespace))
        wait_until(
            lambda: "resource kind does not exist" in hook.create(bad, dry_run=True).stderr,
            what="the API server to call the webhook",
        )
        yield hook
    finally:
        kubectl("delete", "validatingwebhookconfiguration", validating, "--ignore-not-found", check=False)
        webhook_server.stop()


def certs_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", *args, "-o", "json").stdout)
    return out


def test_guide_bad_examples_get_the_guides_messages(webhook: Webhook) -> None:
    ns = webhook.namespace
    result = webhook.create(ctj_yaml("lowercase-kind", BAD_KIND.format(ns=ns)))
    assert result.returncode != 0  # refused by the CRD's own rule, before any webhook
    assert "spec.resources[0].kind: Invalid value: resource kind does not exist: configmap (v1)" in result.stderr

    result = webhook.create(ctj_yaml("unknown-kind", UNKNOWN_KIND.format(ns=ns)))
    assert result.returncode != 0
    assert "spec.resources[0]: resource kind does not exist: Widget (example.com/v1)" in result.stderr

    result = webhook.create(
        ctj_yaml(
            "no-namespace",
            """\
        - apiVersion: v1
          kind: ConfigMap
          name: my-config
        """,
        )
    )
    assert result.returncode != 0
    assert "namespace is required for namespaced resources" in result.stderr

    result = webhook.create(
        ctj_yaml(
            "node-with-namespace",
            f"""\
        - apiVersion: v1
          kind: Node
          name: worker-1
          namespace: {ns}
        """,
        )
    )
    assert result.returncode != 0
    assert "namespace must not be set for cluster-scoped resources" in result.stderr

    assert webhook.kubectl("get", "ctj", "-n", ns, "-o", "name").stdout.strip() == ""


def test_job_template_is_checked_by_a_dry_run(webhook: Webhook) -> None:
    result = webhook.create(
        ctj_yaml(
            "bad-template",
            f"""\
        - apiVersion: v1
          kind: ConfigMap
          name: my-config
          namespace: {webhook.namespace}
        """,
            image='""',
        )
    )
    assert result.returncode != 0
    assert "spec.jobTemplate:" in result.stderr
    assert "spec.template.spec.containers[0].image: Required value" in result.stderr


def test_user_cannot_watch_what_they_cannot_read(webhook: Webhook) -> None:
    ns, kubectl = webhook.namespace, webhook.kubectl
    kubectl("create", "secret", "generic", "db-creds", "-n", ns, "--from-literal=password=x")
    kubectl("create", "configmap", "app-config", "-n", ns, "--from-literal=k=v")
    kubectl(
        "create",
        "role",
        "ctj-author",
        "-n",
        ns,
        "--verb=create",
        "--resource=changetriggeredjobs.triggers.changejob.dev,jobs.batch",
    )
    kubectl("create", "role", "config-reader", "-n", ns, "--verb=get", "--resource=configmaps")
    # the Jobs run as "default": using it takes what the built-in edit role grants, impersonate
    kubectl(
        "create",
        "role",
        "job-runner",
        "-n",
        ns,
        "--verb=impersonate",
        "--resource=serviceaccounts",
        "--resource-name=default",
    )
    for role in ("ctj-author", "config-reader", "job-runner"):
        kubectl("create", "rolebinding", f"alice-{role}", "-n", ns, f"--role={role}", "--user=alice")

    secret_ref = f"""\
        - apiVersion: v1
          kind: Secret
          name: db-creds
          namespace: {ns}
        """
    result = webhook.create(ctj_yaml("steal", secret_ref), as_user="alice")
    assert result.returncode != 0
    assert f'user "alice" may not get secrets "db-creds" in namespace "{ns}"' in result.stderr

    config_ref = f"""\
        - apiVersion: v1
          kind: ConfigMap
          name: app-config
          namespace: {ns}
        """
    result = webhook.create(ctj_yaml("allowed", config_ref), as_user="alice")
    assert result.returncode == 0, result.stderr
    # the same spec by the cluster admin is fine: the check is about who asks
    assert webhook.create(ctj_yaml("admin-steal", secret_ref)).returncode == 0


def test_valid_ctj_is_admitted_and_defaulted_by_the_schema(webhook: Webhook) -> None:
    ns, kubectl = webhook.namespace, webhook.kubectl
    created = webhook.create(
        ctj_yaml(
            "plain",
            f"""\
        - apiVersion: v1
          kind: ConfigMap
          name: my-config
          namespace: {ns}
        - apiVersion: apps/v1
          kind: Deployment
          name: web
          namespace: {ns}
          fields: ["spec.template.spec.containers[*].image"]
        """,
        )
    )
    assert created.returncode == 0, created.stderr
    ctj = get_json(kubectl, "ctj", "plain", "-n", ns)
    spec = ctj["spec"]
    assert (spec["condition"], spec["cooldown"], spec["history"]) == ("Any", "60s", 5)
    assert [r["fields"] for r in spec["resources"]] == [["*"], ["spec.template.spec.containers[*].image"]]
    assert "annotations" not in ctj["metadata"]
    assert "labels" not in ctj["metadata"]
    assert ("/validate-ctj/references", "CREATE", "plain") in webhook.recorder.calls
    assert ("/validate-ctj/spec", "CREATE", "plain") in webhook.recorder.calls

    # a metadata-only update never reaches the webhook; a spec update is reviewed again
    calls = len(webhook.recorder.calls)
    kubectl("label", "ctj", "plain", "-n", ns, "team=a")
    kubectl("annotate", "ctj", "plain", "-n", ns, "argocd.argoproj.io/tracking-id=app:triggers.changejob.dev/x")
    assert len(webhook.recorder.calls) == calls
    kubectl("patch", "ctj", "plain", "-n", ns, "--type=merge", "-p", '{"spec": {"cooldown": "5s"}}')
    assert ("/validate-ctj/references", "UPDATE", "plain") in webhook.recorder.calls[calls:]
    broken = kubectl(
        "patch",
        "ctj",
        "plain",
        "-n",
        ns,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/resources/0/kind", "value": "configmap"}]),
        check=False,
    )
    assert broken.returncode != 0
    assert "resource kind does not exist: configmap (v1)" in broken.stderr
    assert get_json(kubectl, "ctj", "plain", "-n", ns)["metadata"]["labels"] == {"team": "a"}


def test_certificate_secret_and_ca_bundle(webhook: Webhook, api_client: Any) -> None:
    kubectl = webhook.kubectl
    secret = get_json(kubectl, "secret", f"{SERVICE}-cert", "-n", webhook.namespace)
    assert secret["type"] == "kubernetes.io/tls"
    ca = base64.b64decode(secret["data"]["ca.crt"])
    config = get_json(kubectl, "validatingwebhookconfiguration", webhook.validating)
    assert [base64.b64decode(hook["clientConfig"]["caBundle"]) for hook in config["webhooks"]] == [ca, ca]

    # a second replica creating the Secret loses the race and gets the first one's certificate
    other = certs.issue(names=certs.service_names(service=SERVICE, namespace=webhook.namespace), now=certs_now())
    assert webhook.store.create(certs.to_secret_data(other)).data["ca.crt"] == ca
    # a replace based on a stale read loses and returns the winner's
    stale = webhook.store.read()
    assert stale is not None
    winner = webhook.store.replace(certs.to_secret_data(other), resource_version=stale.resource_version)
    assert winner.data["ca.crt"] == other.ca_crt
    loser = webhook.store.replace(dict(stale.data), resource_version=stale.resource_version)
    assert loser.data["ca.crt"] == other.ca_crt
    # put the original back for the webhook under test
    current = webhook.store.read()
    assert current is not None
    webhook.store.replace(dict(stale.data), resource_version=current.resource_version)


def test_rotation_keeps_the_webhook_working(webhook: Webhook) -> None:
    ns = webhook.namespace
    stored = webhook.store.read()
    assert stored is not None
    names = certs.service_names(service=SERVICE, namespace=ns, loopback=True)
    # a certificate 20 days from expiry: inside the 30-day window
    expiring = certs.issue(names=names, now=certs_now(), validity=dt.timedelta(days=20))
    webhook.store.replace(certs.to_secret_data(expiring), resource_version=stored.resource_version)
    webhook.keeper.refresh()  # picks it up as another replica would ... and rotates it at once
    rotated = webhook.store.read()
    assert rotated is not None
    new_ca, old_ca = x509.load_pem_x509_certificates(rotated.data["ca.crt"])
    assert old_ca == x509.load_pem_x509_certificate(expiring.ca_crt)
    assert certs.not_after(rotated.data["tls.crt"]) > certs_now() + dt.timedelta(days=360)
    assert webhook.keeper.files.cert_file.read_bytes() == rotated.data["tls.crt"]
    bundle = get_json(webhook.kubectl, "validatingwebhookconfiguration", webhook.validating)
    assert base64.b64decode(bundle["webhooks"][0]["clientConfig"]["caBundle"]) == rotated.data["ca.crt"]
    # the API server trusts the rotated certificate the server now presents
    wait_until(
        lambda: (
            "resource kind does not exist"
            in webhook.create(ctj_yaml("after-rotation", UNKNOWN_KIND.format(ns=ns)), dry_run=True).stderr
        ),
        what="the webhook to answer with the rotated certificate",
    )
    assert new_ca.subject != old_ca.subject
