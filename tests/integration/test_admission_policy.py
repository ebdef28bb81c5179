"""Admission with no operator running: the CRD, the chart's admission policies, its webhook left dead.

Each test applies the chart's ValidatingAdmissionPolicies exactly as rendered, under names of its own
and bound to its own namespace only, and (where it says so) the chart's ValidatingWebhookConfiguration
pointed at a closed port on 127.0.0.1: that is what the API server meets while no replica answers
(bootstrap, rollout, crash). Users are real RBAC subjects, impersonated with ``kubectl --as``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from ctj_helpers import ctj_body, wait_until
from operator_proc import free_port
from rbac_helpers import Kubectl, render_chart, wait_granted

from changejob.kube import discovery, transport

pytestmark = pytest.mark.integration

CTJ = "changetriggeredjobs.triggers.changejob.dev"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


@pytest.fixture(scope="module")
def chart_docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("chart")
    return render_chart(release="kube-changejob", namespace="kube-changejob-system", values={}, workdir=workdir)


def scoped_policies(docs: list[dict[str, Any]], *, namespace: str, suffix: str) -> list[dict[str, Any]]:
    """The chart's policies and bindings, renamed with ``suffix`` and bound to ``namespace`` only."""
    out = []
    for rendered in docs:
        if rendered["kind"] not in POLICY_KINDS:
            continue
        doc = json.loads(json.dumps(rendered))
        doc["metadata"] = {"name": f"{doc['metadata']['name']}-{suffix}"}
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = f"{doc['spec']['policyName']}-{suffix}"
            doc["spec"]["matchResources"] = {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            }
        out.append(doc)
    return out


def dead_webhook(docs: list[dict[str, Any]], *, namespace: str, name: str) -> dict[str, Any]:
    """The chart's webhook configuration, calling a port nothing listens on."""
    (config,) = [json.loads(json.dumps(d)) for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    config["metadata"] = {"name": name}
    port = free_port()
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{hook['clientConfig']['service']['path']}"}
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return config


class Users:
    """Roles and bindings for impersonated users in the test namespace (and others)."""

    def __init__(self, admin: Kubectl, namespace: str) -> None:
        self.admin = admin
        self.namespace = namespace

    def grant(self, user: str, *, verbs: str, resource: str, names: str = "", namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        role = f"{user}-{uuid.uuid4().hex[:6]}"
        args = ["create", "role", role, "-n", ns, f"--verb={verbs}", f"--resource={resource}"]
        if names:
            args.append(f"--resource-name={names}")
        self.admin(*args)
        self.admin("create", "rolebinding", role, "-n", ns, f"--role={role}", f"--user={user}")
        # RBAC reaches the authorizer within moments: wait, so a refusal below is the policy's.
        verb, what = verbs.split(",", maxsplit=1)[0], resource.split(",", maxsplit=1)[0]
        if names:
            what = f"{what}/{names.split(',', maxsplit=1)[0]}"
        wait_granted(lambda: self.admin.can_i(verb, what, "-n", ns, as_user=user), what=f"{user} {verb} {what}")

    def grant_edit(self, user: str) -> None:
        """The built-in edit role in the test namespace (it includes impersonating ServiceAccounts),
        with ChangeTriggeredJobs added as the chart's aggregated -ctj-editor role adds them."""
        self.admin(
            "create", "rolebinding", f"{user}-edit", "-n", self.namespace, "--clusterrole=edit", f"--user={user}"
        )
        self.grant(user, verbs="create,get,list,watch,update,patch,delete", resource=CTJ)

    def create(self, user: str | None, obj: dict[str, Any]) -> Any:
        who = [f"--as={user}"] if user else []
        return self.admin(*who, "create", "-n", self.namespace, "-f", "-", input_=yaml.safe_dump(obj), check=False)


@pytest.fixture
def policies(admin: Kubectl, namespace: str, crd: None, chart_docs: list[dict[str, Any]]) -> Iterator[Users]:
    """The chart's admission policies, bound to this test's namespace; answering once this returns."""
    suffix = uuid.uuid4().hex[:6]
    docs = scoped_policies(chart_docs, namespace=namespace, suffix=suffix)
    admin("apply", "--server-side", "--field-manager=policy-test", "-f", "-", input_=yaml.safe_dump_all(docs))
    users = Users(admin, namespace)
    probe = ctj_body("probe", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}])
    try:
        # Policies take a moment to compile and reach the admission plugin.
        wait_until(
            lambda: (
                "namespace is required"
                in admin(
                    "create", "--dry-run=server", "-n", namespace, "-f", "-", input_=yaml.safe_dump(probe), check=False
                ).stderr
            ),
            timeout=30,
            what="the admission policies to be in force",
        )
        yield users
    finally:
        admin("delete", "--ignore-not-found", "-f", "-", input_=yaml.safe_dump_all(docs), check=False)


def configmap_ref(namespace: str, name: str = "settings") -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": namespace}


def with_service_account(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] = name
    return obj


def ctj_names(admin: Kubectl, namespace: str) -> set[str]:
    return set(admin("get", CTJ, "-n", namespace, "-o", "name").stdout.split())


# --- the table of kinds the policy knows -----------------------------------------------------------


def test_every_known_kind_is_what_discovery_says(chart_docs: list[dict[str, Any]], api_client: Any) -> None:
    (policy,) = [
        d for d in chart_docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith("tenancy")
    ]
    (table,) = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == "kinds"]
    entries = re.findall(r"'([^']+)/([^'/]+)': \['([^']+)', '(Namespaced|Cluster)'\]", table)
    assert len(entries) >= 40
    resolver = discovery.Discovery(transport.Transport(api_client))
    for api_version, kind, resource, scope in entries:
        found = resolver.resolve(api_version=api_version, kind=kind)
        assert found is not None, f"{kind} ({api_version}) is not served"
        assert (found.plural, found.namespaced) == (resource, scope == "Namespaced"), kind
        # Kubernetes' own fallback from kind to resource, which the policy uses for other kinds, agrees
        lower = kind.lower()
        guess = (
            lower
            if lower.endswith("endpoints")
            else lower + "es"
            if lower.endswith("s")
            else lower[:-1] + "ies"
            if lower.endswith("y")
            else lower + "s"
        )
        assert guess == resource, kind


# --- tenancy with no replica running -------------------------------------------------------------


def test_a_user_who_may_not_create_jobs_cannot_create_a_ctj(policies: Users, admin: Kubectl, namespace: str) -> None:
    policies.grant("carol", verbs="create,get", resource=CTJ)
    policies.grant("carol", verbs="get", resource="configmaps")
    policies.grant("carol", verbs="impersonate", resource="serviceaccounts", names="default")
    result = policies.create("carol", ctj_body("jobs", [configmap_ref(namespace)]))
    assert result.returncode != 0
    assert f'user "carol" may not create jobs.batch in namespace "{namespace}"' in result.stderr
    assert ctj_names(admin, namespace) == set()
    policies.grant("carol", verbs="create", resource="jobs.batch")
    wait_until(
        lambda: policies.create("carol", ctj_body("jobs", [configmap_ref(namespace)])).returncode == 0,
        what="carol's CTJ once she may create Jobs",
    )


def test_a_user_cannot_reference_a_secret_of_another_namespace_it_cannot_read(
    policies: Users, admin: Kubectl, namespace: str
) -> None:
    other = f"{namespace}-other"
    admin("create", "namespace", other)
    try:
        admin("create", "secret", "generic", "db", "-n", other, "--from-literal=password=x")
        policies.grant_edit("dave")  # everything in his own namespace
        steal = ctj_body("steal", [{"apiVersion": "v1", "kind": "Secret", "name": "db", "namespace": other}])
        result = policies.create("dave", steal)
        assert result.returncode != 0
        assert f'user "dave" may not get secrets "db" in namespace "{other}"' in result.stderr
        assert ctj_names(admin, namespace) == set()
        # his own namespace's Secret is fine, and so is the other one once he may read it, by name
        own = ctj_body("own", [{"apiVersion": "v1", "kind": "Secret", "name": "db", "namespace": namespace}])
        assert policies.create("dave", own).returncode == 0
        policies.grant("dave", verbs="get", resource="secrets", names="db", namespace=other)
        wait_until(lambda: policies.create("dave", steal).returncode == 0, what="dave's CTJ once he may read db")
        # a cluster-scoped object takes a cluster-wide grant
        node = ctj_body("node", [{"apiVersion": "v1", "kind": "Node", "name": "kwok-node-0"}])
        result = policies.create("dave", node)
        assert result.returncode != 0
        assert 'user "dave" may not get nodes "kwok-node-0"' in result.stderr
    finally:
        admin("delete", "namespace", other, "--wait=false", check=False)


def test_a_user_cannot_name_a_service_account_it_may_not_use(policies: Users, admin: Kubectl, namespace: str) -> None:
    admin("create", "serviceaccount", "deployer", "-n", namespace)
    policies.grant("erin", verbs="create", resource=f"{CTJ},jobs.batch")
    policies.grant("erin", verbs="get", resource="configmaps")
    policies.grant("erin", verbs="impersonate", resource="serviceaccounts", names="default")
    powerful = with_service_account(ctj_body("powerful", [configmap_ref(namespace)]), "deployer")
    result = policies.create("erin", powerful)
    assert result.returncode != 0
    assert f'user "erin" may not impersonate serviceaccounts "deployer" in namespace "{namespace}"' in result.stderr
    assert policies.create("erin", ctj_body("plain", [configmap_ref(namespace)])).returncode == 0  # runs as default
    # whoever holds the built-in edit role may run Pods as any ServiceAccount, and so may name one
    policies.grant_edit("frank")
    assert policies.create("frank", powerful).returncode == 0, "edit grants impersonate on serviceaccounts"


def test_spec_changes_are_checked_for_whoever_makes_them_and_metadata_is_free(
    policies: Users, admin: Kubectl, namespace: str
) -> None:
    admin("create", "secret", "generic", "db", "-n", namespace, "--from-literal=password=x")
    assert policies.create(None, ctj_body("sync", [configmap_ref(namespace)])).returncode == 0
    policies.grant("gina", verbs="get,list,patch,update", resource=CTJ)
    policies.grant("gina", verbs="create", resource="jobs.batch")
    policies.grant("gina", verbs="impersonate", resource="serviceaccounts", names="default")
    patch = {"spec": {"resources": [{"apiVersion": "v1", "kind": "Secret", "name": "db", "namespace": namespace}]}}
    refused = admin(
        "--as=gina", "patch", CTJ, "sync", "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False
    )
    assert refused.returncode != 0
    assert f'user "gina" may not get secrets "db" in namespace "{namespace}"' in refused.stderr
    for args in (
        ("label", CTJ, "sync", "team=a"),
        (
            "annotate",
            CTJ,
            "sync",
            "argocd.argoproj.io/tracking-id=apps:triggers.changejob.dev/ChangeTriggeredJob:x/sync",
        ),
        ("patch", CTJ, "sync", "--type=merge", "-p", '{"metadata": {"finalizers": ["example.com/hold"]}}'),
        ("patch", CTJ, "sync", "--type=merge", "-p", '{"metadata": {"finalizers": null}}'),
    ):
        assert admin("--as=gina", *args, "-n", namespace, check=False).returncode == 0, args


def test_the_guides_messages_without_a_webhook(policies: Users, namespace: str) -> None:
    cases = {
        "resource kind does not exist: configmap (v1)": {**configmap_ref(namespace), "kind": "configmap"},
        "resource kind does not exist: Configmap (v1); kinds are case-sensitive, did you mean ConfigMap?": {
            **configmap_ref(namespace),
            "kind": "Configmap",
        },
        'namespace is required for namespaced resources: ConfigMap (v1) "settings"': {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "settings",
        },
        'namespace must not be set for cluster-scoped resources: Node (v1) "worker-1"': {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "worker-1",
            "namespace": namespace,
        },
    }
    for message, ref in cases.items():
        result = policies.create(None, ctj_body("bad", [ref]))
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


# --- GitOps writes while no replica answers the webhook ------------------------------------------------


@pytest.fixture
def no_replica(
    admin: Kubectl, namespace: str, policies: Users, chart_docs: list[dict[str, Any]]
) -> Iterator[Callable[[bool], None]]:
    """Install the chart's webhook configuration with nobody answering; ``install(False)`` drops its
    matchConditions (the configuration before they existed), to show what they change."""
    name = f"ctj-dead-{namespace}"

    def install(with_match_conditions: bool = True) -> None:
        config = dead_webhook(chart_docs, namespace=namespace, name=name)
        if not with_match_conditions:
            for hook in config["webhooks"]:
                del hook["matchConditions"]
        admin("apply", "--server-side", "--force-conflicts", "-f", "-", input_=yaml.safe_dump(config))

    try:
        yield install
    finally:
        admin("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)


def test_gitops_writes_succeed_with_the_operator_stopped(
    no_replica: Callable[[bool], None], policies: Users, admin: Kubectl, namespace: str
) -> None:
    obj = ctj_body("app-sync", [configmap_ref(namespace)])
    admin("create", "-n", namespace, "-f", "-", input_=yaml.safe_dump(obj))

    no_replica(False)  # no matchConditions: every write calls a webhook that nobody answers
    wait_until(
        lambda: admin("label", CTJ, "app-sync", "-n", namespace, "probe=1", "--overwrite", check=False).returncode != 0,
        what="the dead webhook to be called",
    )
    blocked = admin("annotate", CTJ, "app-sync", "-n", namespace, "x=y", check=False)
    assert "failed calling webhook" in blocked.stderr

    no_replica(True)  # the chart's configuration
    wait_until(
        lambda: admin("annotate", CTJ, "app-sync", "-n", namespace, "x=y", "--overwrite", check=False).returncode == 0,
        what="metadata writes to pass again",
    )
    # An Argo CD sync: the same manifest applied again with its tracking annotation.
    tracked = json.loads(json.dumps(obj))
    tracked["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": "apps:triggers.changejob.dev/ChangeTriggeredJob:" + namespace + "/app-sync"
    }
    admin("apply", "-n", namespace, "-f", "-", input_=yaml.safe_dump(tracked))
    admin("label", CTJ, "app-sync", "-n", namespace, "app.kubernetes.io/instance=apps")

    def merge_patch(body: dict[str, Any], *extra: str) -> None:
        admin("patch", CTJ, "app-sync", "-n", namespace, *extra, "--type=merge", "-p", json.dumps(body))

    merge_patch({"metadata": {"finalizers": ["example.com/x"]}})
    owner = admin("get", "configmap", "kube-root-ca.crt", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "kube-root-ca.crt", "uid": owner}
    merge_patch({"metadata": {"ownerReferences": [reference]}})
    merge_patch({"status": {"observedGeneration": 1}}, "--subresource=status")
    # A spec change to a known kind needs no replica: the policy checks it, the advice is skipped.
    merge_patch({"spec": {"cooldown": "5s"}})
    # Invalid specs are still refused with the guide's message, by the CRD.
    kind_patch = [{"op": "replace", "path": "/spec/resources/0/kind", "value": "configmap"}]
    lower = admin("patch", CTJ, "app-sync", "-n", namespace, "--type=json", "-p", json.dumps(kind_patch), check=False)
    assert lower.returncode != 0
    assert "resource kind does not exist: configmap (v1)" in lower.stderr
    # A kind only discovery can judge waits for a replica: refused, never admitted unchecked.
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "namespace": namespace}
    widget_patch = json.dumps({"spec": {"resources": [widget]}})
    unknown = admin("patch", CTJ, "app-sync", "-n", namespace, "--type=merge", "-p", widget_patch, check=False)
    assert unknown.returncode != 0
    assert "failed calling webhook" in unknown.stderr and "references.changetriggeredjobs" in unknown.stderr
    # and deleting needs nobody either
    merge_patch({"metadata": {"finalizers": None}})
    admin("delete", CTJ, "app-sync", "-n", namespace, "--wait=true", "--timeout=30s")
