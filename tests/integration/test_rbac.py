"""The operator with exactly the Helm chart's RBAC, on a cluster that enforces RBAC.

Each test renders the chart for a release in its own namespace, applies only the ServiceAccount and
the (Cluster)Roles and bindings as rendered, and runs the real operator as a child process with a
kubeconfig holding a TokenRequest token of that ServiceAccount: every API call it makes is authorized
by the chart's grants and nothing else. The release namespace is the test namespace, which is also
the operator's leader-election namespace (where its Leases and its hash-key Secret live), as in a
chart install. Release names are unique, so the cluster-scoped objects of parallel tests never
collide; they are deleted when the test ends.

``changejob_api_errors_total{code="403"}`` (the operator's count of refused API requests) stays at
zero through the scenarios; the test that takes a grant away shows that the counter does see 403s.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from ctj_helpers import FIRST_TRIGGER, Kube, baseline_recorded, condition, ctj_body, wait_until
from operator_proc import OperatorProcess, free_port
from rbac_helpers import ChartRbac, Kubectl, service_account_kubeconfig, wait_granted

pytestmark = pytest.mark.integration
T = TypeVar("T")

CTJ_RESOURCE = "changetriggeredjobs.triggers.changejob.dev"
NO_WEBHOOK: dict[str, Any] = {"webhook": {"enabled": False}, "crds": {"install": False}}
TRIGGER = "changejob.dev/trigger"
CONFIGMAPS_ONLY = [{"apiGroup": "", "resources": ["configmaps"]}]

WEB_APP = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web-app
    spec:
      replicas: 1
      selector:
        matchLabels: {app: web-app}
      template:
        metadata:
          labels: {app: web-app}
        spec:
          containers:
          - name: web
            image: nginx:1.27
    """)


# --- helpers ---------------------------------------------------------------------------------------
def refused_requests(proc: OperatorProcess) -> float:
    """How many API requests the API server refused with 403, by the operator's own metric."""
    total = 0.0
    for line in proc.metrics().splitlines():
        if line.startswith("changejob_api_errors_total{") and 'code="403"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def refused_lines(proc: OperatorProcess) -> list[str]:
    """The operator's log lines about 403 answers (evidence for a failure message)."""
    return [line for line in proc.logs().splitlines() if " 403 " in line or "forbidden" in line.lower()]


def wait_value(fn: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    """``wait_until`` for a function that answers None until it has its value."""
    value = wait_until(fn, timeout=timeout, what=what)
    assert value is not None
    return value


def assert_nothing_refused(proc: OperatorProcess) -> None:
    assert proc.proc is not None and proc.proc.poll() is None, f"operator exited:\n{proc.logs()[-3000:]}"
    refused = refused_requests(proc)
    assert refused == 0, f"{refused:g} API requests refused:\n" + "\n".join(refused_lines(proc)[-10:])


def job_succeeded(kube: Kube, name: str, job_name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = kube.ctj(name).get("status") or {}
        return status if status.get("lastJobName") == job_name and status.get("lastJobStatus") == "Succeeded" else None

    return check


def cluster_wide(**watch: Any) -> dict[str, Any]:
    return {**NO_WEBHOOK, "watch": watch} if watch else dict(NO_WEBHOOK)


def namespaced(namespace: str, **watch: Any) -> dict[str, Any]:
    return {**NO_WEBHOOK, "watch": {"namespaces": [namespace], **watch}}


# --- the operator's own permissions ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_guide_scenarios_run_with_the_charts_rbac(
    mode: str,
    admin: Kubectl,
    admin_kube: Kube,
    namespace: str,
    chart_rbac: Callable[..., ChartRbac],
    chart_operator: Callable[..., OperatorProcess],
) -> None:
    kube = admin_kube
    rbac = chart_rbac(cluster_wide() if mode == "cluster-wide" else namespaced(namespace))
    if mode == "namespaced":  # the watched types, Jobs and Events come from a Role, not the ClusterRole
        role = rbac.named("Role", "watch-role")
        assert role["metadata"]["namespace"] == namespace
        manager_resources = {
            r for rule in rbac.named("ClusterRole", "manager-role")["rules"] for r in rule["resources"]
        }
        assert not manager_resources & {"configmaps", "secrets", "jobs", "events"}
    operator = chart_operator(rbac)
    # Its own bookkeeping in the release namespace: the hash key and the shard Leases.
    assert kube.get("secret", "kube-changejob-hash-key") is not None
    assert json.loads(kube.run("get", "leases", "-n", namespace, "-o", "json").stdout)["items"]

    # The guide's first ChangeTriggeredJob.
    kube.run("create", "configmap", "my-config", "-n", namespace, "--from-literal=key=value")
    kube.apply(FIRST_TRIGGER.format(ns=namespace))
    wait_until(baseline_recorded(kube, "my-first-trigger"), what="baseline")
    ready = condition(kube.ctj("my-first-trigger"), "Ready")
    assert ready is not None and ready["status"] == "True", ready
    kube.run("patch", "configmap", "my-config", "-n", namespace, "-p", '{"data":{"key":"newvalue"}}')
    (job,) = wait_until(lambda: kube.jobs("my-first-trigger"), what="the Job")
    assert job["metadata"]["labels"]["changejob.dev/owner"] == "my-first-trigger"
    status = wait_value(
        job_succeeded(kube, "my-first-trigger", job["metadata"]["name"]), timeout=60, what="lastJobStatus Succeeded"
    )
    assert status["triggerCount"] == 1
    assert {"BaselineRecorded", "JobCreated"} <= {e["reason"] for e in kube.events("my-first-trigger")}

    # A Secret and a Deployment (only its images), either one triggers.
    kube.run("create", "secret", "generic", "app-secret", "-n", namespace, "--from-literal=password=one")
    kube.apply(WEB_APP)
    kube.apply(
        ctj_body(
            "app-watch",
            [
                {"apiVersion": "v1", "kind": "Secret", "name": "app-secret", "namespace": namespace},
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web-app",
                    "namespace": namespace,
                    "fields": ["spec.template.spec.containers[*].image"],
                },
            ],
            cooldown="0s",
            condition_="Any",
            history=1,
        )
    )
    wait_until(baseline_recorded(kube, "app-watch"), what="baseline of app-watch")
    kube.patch("secret", "app-secret", {"stringData": {"password": "two"}})
    (first,) = wait_until(lambda: kube.jobs("app-watch"), what="the Job for the Secret")
    assert first["metadata"]["annotations"]["changejob.dev/changed"].startswith(f"Secret/{namespace}/app-secret")
    wait_until(job_succeeded(kube, "app-watch", first["metadata"]["name"]), timeout=60, what="first Job done")
    kube.patch("deployment", "web-app", {"spec": {"replicas": 2}})  # not a selected field
    kube.run("set", "image", "deployment/web-app", "web=nginx:1.28", "-n", namespace)

    def second_job() -> dict[str, Any] | None:
        return next((j for j in kube.jobs("app-watch") if j["metadata"]["annotations"][TRIGGER] == "2"), None)

    second = wait_value(second_job, what="the Job for the image")
    changed = second["metadata"]["annotations"]["changejob.dev/changed"]
    assert changed == f"Deployment/{namespace}/web-app:spec.template.spec.containers[*].image", changed
    status = wait_value(job_succeeded(kube, "app-watch", second["metadata"]["name"]), timeout=60, what="second Job")
    assert status["triggerCount"] == 2
    # history 1: the first Job is deleted (Jobs: delete).
    wait_until(
        lambda: [j["metadata"]["name"] for j in kube.jobs("app-watch")] == [second["metadata"]["name"]],
        what="the first Job pruned",
    )
    assert "JobsPruned" in {e["reason"] for e in kube.events("app-watch")}
    assert [e["state"] for e in status["resourceHashes"]] == ["Present", "Present"]
    degraded = condition({"status": status}, "Degraded")
    assert degraded is not None and degraded["status"] == "False", degraded
    assert_nothing_refused(operator)


def test_a_type_missing_from_watch_resources_is_reported_not_fatal(
    admin: Kubectl,
    admin_kube: Kube,
    namespace: str,
    chart_rbac: Callable[..., ChartRbac],
    chart_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    kube = admin_kube
    rbac = chart_rbac(cluster_wide(resources=CONFIGMAPS_ONLY))
    operator = chart_operator(rbac)
    kube.run("create", "configmap", "cfg", "-n", namespace, "--from-literal=k=0")
    kube.run("create", "secret", "generic", "app-secret", "-n", namespace, "--from-literal=k=0")
    kube.apply(
        ctj_body(
            "cm-trigger",
            [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": namespace}],
            cooldown="0s",
        )
    )
    kube.apply(
        ctj_body(
            "secret-trigger",
            [{"apiVersion": "v1", "kind": "Secret", "name": "app-secret", "namespace": namespace}],
            cooldown="0s",
        )
    )

    def degraded() -> dict[str, Any] | None:
        ctj = kube.ctj("secret-trigger")
        cond = condition(ctj, "Degraded")
        return ctj if cond is not None and cond["status"] == "True" else None

    ctj = wait_value(degraded, what="secret-trigger Degraded")
    cond = condition(ctj, "Degraded")
    assert cond is not None and cond["reason"] == "ResourceForbidden"
    # The message names the rule to add, in the chart's terms.
    for needle in ("list/watch secrets", 'apiGroups [""]', 'resources ["secrets"]', "watch.resources"):
        assert needle in cond["message"], cond["message"]
    ready = condition(ctj, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ResourceForbidden")
    (entry,) = ctj["status"]["resourceHashes"]
    assert entry["state"] == "Forbidden" and "lastTriggeredHash" not in entry  # no baseline from nothing
    warnings = [e for e in kube.events("secret-trigger") if e["reason"] == "ResourceForbidden"]
    assert warnings and warnings[0]["type"] == "Warning"

    # Settled: the forbidden CTJ's status is not rewritten over and over.
    version = ctj["metadata"]["resourceVersion"]
    time.sleep(3)
    assert kube.ctj("secret-trigger")["metadata"]["resourceVersion"] == version

    # The operator carries on: it is ready and still triggers the ConfigMap CTJ.
    assert operator.proc is not None and operator.proc.poll() is None
    assert operator.http_status("/readyz") == 200
    wait_until(baseline_recorded(kube, "cm-trigger"), what="cm-trigger baseline")
    kube.patch("configmap", "cfg", {"data": {"k": "1"}})
    wait_until(lambda: kube.jobs("cm-trigger"), what="the ConfigMap's Job")
    assert kube.jobs("secret-trigger") == []
    assert refused_requests(operator) >= 1  # the metric the scenarios rely on does count 403s

    # The ServiceAccount itself is refused Secrets: the API server, not the operator, enforces it.
    sa = Kubectl(
        binary=admin.binary,
        kubeconfig=service_account_kubeconfig(
            admin=admin, namespace=namespace, service_account=rbac.service_account, path=tmp_path / "probe.kubeconfig"
        ),
    )
    for args in (
        ("get", "secrets", "-n", namespace),
        ("get", "secrets", "-n", namespace, "--watch-only", "--request-timeout=5s"),
        ("get", "secret", "app-secret", "-n", "default"),
    ):
        refused = sa(*args, check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, (args, refused.stderr)
    listed = sa("get", "secrets", "-n", namespace, check=False).stderr
    assert re.search(
        rf'User "{re.escape(rbac.username)}" cannot list resource "secrets" in API group "" '
        rf'in the namespace "{namespace}"',
        listed,
    ), listed
    assert sa("get", "configmaps", "-n", namespace).returncode == 0


def test_granting_the_named_rule_recovers_without_a_job(
    admin: Kubectl,
    admin_kube: Kube,
    namespace: str,
    chart_rbac: Callable[..., ChartRbac],
    chart_operator: Callable[..., OperatorProcess],
) -> None:
    kube = admin_kube
    values = cluster_wide(resources=CONFIGMAPS_ONLY)
    rbac = chart_rbac(values)
    operator = chart_operator(rbac)
    kube.run("create", "secret", "generic", "app-secret", "-n", namespace, "--from-literal=k=0")
    kube.apply(
        ctj_body(
            "secret-trigger",
            [{"apiVersion": "v1", "kind": "Secret", "name": "app-secret", "namespace": namespace}],
            cooldown="0s",
        )
    )
    wait_until(
        lambda: (condition(kube.ctj("secret-trigger"), "Degraded") or {}).get("reason") == "ResourceForbidden",
        what="ResourceForbidden",
    )

    # What the message says to do, done the chart's way: add secrets to watch.resources and upgrade.
    upgraded = ChartRbac(
        admin=admin,
        namespace=namespace,
        release=rbac.release,
        workdir=Path(operator.workdir),
        values=cluster_wide(resources=[{"apiGroup": "", "resources": ["configmaps", "secrets"]}]),
    )
    upgraded.apply()
    wait_granted(lambda: admin.can_i("watch", "secrets", "-n", namespace, as_user=rbac.username), what="watch secrets")

    # The stream retries a refused list after about a minute; then the CTJ is ready, and a resource
    # that becomes readable is a baseline, not a change.
    wait_until(baseline_recorded(kube, "secret-trigger"), timeout=100, interval=1.0, what="recovered baseline")
    ctj = kube.ctj("secret-trigger")
    ready = condition(ctj, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    assert ctj["status"]["triggerCount"] == 0 and kube.jobs("secret-trigger") == []
    kube.patch("secret", "app-secret", {"stringData": {"k": "1"}})
    wait_until(lambda: kube.jobs("secret-trigger"), what="the Job after a real change")
    assert operator.proc is not None and operator.proc.poll() is None


# --- users: the aggregated ClusterRoles ---------------------------------------------------------------
def test_namespace_editors_manage_and_viewers_read_ctjs(
    admin: Kubectl,
    admin_kube: Kube,
    namespace: str,
    chart_rbac: Callable[..., ChartRbac],
) -> None:
    kube = admin_kube
    rbac = chart_rbac(cluster_wide())
    labels = {
        name: rbac.named("ClusterRole", f"ctj-{name}")["metadata"]["labels"] for name in ("admin", "editor", "viewer")
    }
    assert labels["admin"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["editor"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["viewer"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    alice, bob, carol = (f"{who}-{namespace}" for who in ("alice", "bob", "carol"))
    kube.run("create", "rolebinding", "alice-edit", "--clusterrole=edit", f"--user={alice}", "-n", namespace)
    kube.run("create", "rolebinding", "bob-view", "--clusterrole=view", f"--user={bob}", "-n", namespace)
    # The aggregation controller copies the rules into edit and view shortly after they appear.
    wait_granted(lambda: admin.can_i("create", CTJ_RESOURCE, "-n", namespace, as_user=alice), what="alice create")
    wait_granted(lambda: admin.can_i("list", CTJ_RESOURCE, "-n", namespace, as_user=bob), what="bob list")

    ns = ("-n", namespace)
    for verb in ("create", "get", "list", "watch", "update", "patch", "delete"):
        assert admin.can_i(verb, CTJ_RESOURCE, *ns, as_user=alice), verb
    # The status belongs to the operator: users may read it, not write it.
    assert not admin.can_i("update", CTJ_RESOURCE, "--subresource=status", *ns, as_user=alice)
    for verb in ("get", "list", "watch"):
        assert admin.can_i(verb, CTJ_RESOURCE, *ns, as_user=bob), verb
    for verb in ("create", "update", "patch", "delete"):
        assert not admin.can_i(verb, CTJ_RESOURCE, *ns, as_user=bob), verb
    assert not admin.can_i("get", CTJ_RESOURCE, *ns, as_user=carol)
    assert not admin.can_i("create", CTJ_RESOURCE, "-n", "default", as_user=alice)  # only where bound

    # And for real, through the API server.
    manifest = yaml.safe_dump(
        ctj_body("by-alice", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": namespace}])
    )
    admin(f"--as={alice}", "create", *ns, "-f", "-", input_=manifest)
    got = admin(f"--as={bob}", "get", CTJ_RESOURCE, "by-alice", *ns, "-o", "json")
    assert json.loads(got.stdout)["metadata"]["name"] == "by-alice"
    refused = admin(f"--as={bob}", "create", *ns, "-f", "-", check=False, input_=manifest.replace("by-alice", "by-bob"))
    assert refused.returncode != 0
    assert (
        f'User "{bob}" cannot create resource "changetriggeredjobs" in API group "triggers.changejob.dev" '
        f'in the namespace "{namespace}"'
    ) in refused.stderr, refused.stderr
    refused = admin(f"--as={bob}", "delete", CTJ_RESOURCE, "by-alice", *ns, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr
    admin(f"--as={alice}", "delete", CTJ_RESOURCE, "by-alice", *ns)


# --- the admission webhook's permissions ----------------------------------------------------------------
def chart_webhook(rbac: ChartRbac, *, namespace: str, port: int) -> dict[str, Any]:
    """The chart's webhook configuration (same name, so the resourceNames-limited grants apply), with two
    test-only changes: the API server calls the operator on 127.0.0.1 by URL, and only for ``namespace``."""
    (config,) = [d for d in rbac.docs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert config["metadata"]["name"] == f"{rbac.release}-validating-webhook"
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}"}
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return config


def webhook_operator_args(rbac: ChartRbac, *, port: int, cert_dir: Path) -> tuple[str, ...]:
    deployment = next(d for d in rbac.docs if d["kind"] == "Deployment")
    chart_args = [
        a
        for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.startswith(("--webhook-service=", "--webhook-config=", "--webhook-cert-mode=", "--webhook-tenancy="))
    ]
    assert len(chart_args) == 4, chart_args
    return (
        *chart_args,
        f"--webhook-port={port}",
        "--webhook-host=127.0.0.1",
        "--webhook-extra-sans=127.0.0.1",
        f"--webhook-cert-dir={cert_dir}",
    )


@pytest.mark.parametrize("tenancy", ["policy", "webhook"])
def test_webhook_serves_with_the_charts_rbac(
    tenancy: str,
    admin: Kubectl,
    admin_kube: Kube,
    namespace: str,
    chart_rbac: Callable[..., ChartRbac],
    chart_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    """The operator keeps the caBundle of the chart's webhook configuration and answers reviews.

    ``policy``: the chart's defaults in namespaced mode (the admission policy checks tenancy; the
    webhook answers from discovery and dry-runs Job templates in the release namespace, no access
    review granted). ``webhook``: without the admission policy, the webhook checks tenancy with
    SubjectAccessReviews.
    """
    kube = admin_kube
    values: dict[str, Any] = {"crds": {"install": False}}
    if tenancy == "policy":
        values["watch"] = {"namespaces": [namespace]}
    else:
        values["admissionPolicy"] = {"enabled": False}
    rbac = chart_rbac(values)
    manager = rbac.named("ClusterRole", "manager-role")
    access_reviews = [r for r in manager["rules"] if "subjectaccessreviews" in r["resources"]]
    assert bool(access_reviews) == (tenancy == "webhook")
    port = free_port()
    config = chart_webhook(rbac, namespace=namespace, port=port)
    kube.run("apply", "-f", "-", input_=yaml.safe_dump(config))
    try:
        operator = chart_operator(rbac, extra=webhook_operator_args(rbac, port=port, cert_dir=tmp_path / "certs"))
        name = config["metadata"]["name"]
        wait_until(
            lambda: all(
                h["clientConfig"].get("caBundle")
                for h in admin.json("get", "validatingwebhookconfiguration", name)["webhooks"]
            ),
            what=f"caBundle of {name}",
        )
        assert kube.get("secret", f"{rbac.release}-webhook-service-cert") is not None

        # A namespace editor's CTJ passes the webhook (the Job dry run, in webhook mode access reviews).
        editor = f"editor-{namespace}"
        kube.run("create", "rolebinding", "editor-edit", "--clusterrole=edit", f"--user={editor}", "-n", namespace)
        wait_granted(lambda: admin.can_i("create", CTJ_RESOURCE, "-n", namespace, as_user=editor), what="editor")
        kube.run("create", "configmap", "cfg", "-n", namespace, "--from-literal=k=0")
        body = ctj_body("reviewed", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": namespace}])
        admin(f"--as={editor}", "create", "-n", namespace, "-f", "-", input_=yaml.safe_dump(body))
        wait_until(baseline_recorded(kube, "reviewed"), what="baseline of the reviewed CTJ")

        # The Job template is dry-run (in the release namespace) and kinds are looked up.
        bad = ctj_body("bad-image", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": namespace}])
        bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = ""
        denied = admin("create", "-n", namespace, "-f", "-", check=False, input_=yaml.safe_dump(bad))
        assert "spec.template.spec.containers[0].image: Required value" in denied.stderr, denied.stderr
        widget = ctj_body(
            "widget", [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "namespace": namespace}]
        )
        denied = admin("create", "-n", namespace, "-f", "-", check=False, input_=yaml.safe_dump(widget))
        assert "resource kind does not exist: Widget (example.com/v1)" in denied.stderr, denied.stderr

        if tenancy == "webhook":
            # Someone allowed to create CTJs but not to read Secrets is turned away by the access review.
            author = f"author-{namespace}"
            kube.run(
                "create",
                "rolebinding",
                "author-ctj",
                f"--clusterrole={rbac.release}-ctj-editor",
                f"--user={author}",
                "-n",
                namespace,
            )
            wait_granted(lambda: admin.can_i("create", CTJ_RESOURCE, "-n", namespace, as_user=author), what="author")
            peek = ctj_body(
                "peek", [{"apiVersion": "v1", "kind": "Secret", "name": "anything", "namespace": namespace}]
            )
            denied = admin(
                f"--as={author}", "create", "-n", namespace, "-f", "-", check=False, input_=yaml.safe_dump(peek)
            )
            assert denied.returncode != 0 and "denied the request" in denied.stderr, denied.stderr
            assert f'user "{author}" may not create jobs.batch in namespace "{namespace}"' in denied.stderr, (
                denied.stderr
            )
        assert_nothing_refused(operator)
    finally:
        admin("delete", "--ignore-not-found", "--wait=false", "-f", "-", check=False, input_=yaml.safe_dump(config))
