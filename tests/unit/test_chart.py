"""The Helm chart, rendered offline with the pinned helm: names, security, RBAC, determinism, schema.

Also checks that the generated files (the chart's CRD template, dist/install.yaml and
config/default/) are what tools/render.sh makes from their sources today.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import helpers

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
CRD_PATH = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
RELEASE = "kube-changejob"
NAMESPACE = "kube-changejob-system"

Doc = dict[str, Any]


def _tool(name: str) -> str:
    """Path of a pinned tool; a missing one skips the test locally but fails it in CI."""
    return helpers.pinned_tool(name)


@pytest.fixture(scope="module")
def helm() -> str:
    return _tool("helm")


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, check=check, timeout=120)


def template_text(
    helm: str, *sets: str, release: str = RELEASE, namespace: str = NAMESPACE, set_json: Iterable[str] = ()
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    for value in set_json:
        args += ["--set-json", value]
    return run_helm(helm, *args).stdout


def render(
    helm: str, *sets: str, release: str = RELEASE, namespace: str = NAMESPACE, set_json: Iterable[str] = ()
) -> list[Doc]:
    text = template_text(helm, *sets, release=release, namespace=namespace, set_json=set_json)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: Iterable[Doc], kind: str, name: str | None = None, namespace: str | None = None) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: Iterable[Doc], kind: str, name: str | None = None, namespace: str | None = None) -> Doc:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rules_for(role: Mapping[str, Any], group: str, resource: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in role.get("rules") or ()
        if (group in r["apiGroups"] or "*" in r["apiGroups"]) and (resource in r["resources"] or "*" in r["resources"])
    ]


def verbs_for(role: Mapping[str, Any], group: str, resource: str) -> set[str]:
    return {v for r in rules_for(role, group, resource) for v in r["verbs"]}


def container(docs: Iterable[Doc]) -> Doc:
    deployment = one(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: Doc = containers[0]
    return found


@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[Doc]:
    return render(helm)


# -- lint, schema and determinism ------------------------------------------------------------------


def test_helm_lint_strict(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    many = [
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "watch.namespaces={a,b}",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "otel.enabled=true",
        "--set",
        "otel.endpoint=http://collector:4318",
    ]
    result = run_helm(helm, "lint", "--strict", str(CHART), *many, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "value",
    [
        "foo=bar",
        "image.foo=bar",
        "webhook.certManager.foo=1",
        "replicaCount=0",
        "webhook.failurePolicy=Sometimes",
        "operator.pollInterval=soon",
    ],
)
def test_schema_rejects_unknown_or_invalid_values(helm: str, value: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", value, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr.lower()


def _schema_objects(node: Any, path: str = "") -> Iterable[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        if "properties" in node:
            yield path, node
        for key, child in node.items():
            yield from _schema_objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_objects(child, f"{path}/{index}")


def test_schema_closes_every_object_and_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    objects = list(_schema_objects(schema))
    assert objects
    for path, node in objects:
        assert node.get("additionalProperties") is False, f"{path or '/'} is open"
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{path}/properties/{name} has no description"


def _documented_keys(text: str) -> list[tuple[str, bool]]:
    """(dotted key, documented) for each value of values.yaml: every mapping key that holds a scalar,
    an inline collection or a list (list items are described by their key). A value counts as
    documented when a comment line sits right above it or above one of its parents."""
    result: list[tuple[str, bool]] = []
    stack: list[tuple[int, str, bool]] = []  # open parents: (indent, key, documented)
    previous_is_comment = False
    list_indent: int | None = None
    pending: tuple[str, bool] | None = None  # a key with no inline value: a parent, or a list holder
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            previous_is_comment = stripped.startswith("#")
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- ") or (list_indent is not None and indent > list_indent):
            if pending is not None:  # the key above holds a list: it is a value
                result.append(pending)
                pending = None
            if list_indent is None:
                list_indent = indent
            continue
        list_indent = None
        pending = None
        match = re.match(r"([A-Za-z][\w-]*):(.*)$", stripped)
        assert match, f"unexpected values.yaml line: {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = previous_is_comment or any(doc for _, _, doc in stack)
        key = ".".join([k for _, k, _ in stack] + [match.group(1)])
        if match.group(2).strip():
            result.append((key, documented))
        else:
            pending = (key, documented)
            stack.append((indent, match.group(1), documented))
        previous_is_comment = False
    return result


def test_every_value_is_commented() -> None:
    keys = _documented_keys((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert len(keys) > 40
    undocumented = [key for key, documented in keys if not documented]
    assert undocumented == []


def test_the_comment_check_finds_an_undocumented_value() -> None:
    text = "# -- a\na: 1\nb:\n  # -- c\n  c: 2\n  d: {}\nlist:\n  - x: 1\n    y: 2\n# -- e\ne:\n  - 1\n"
    assert _documented_keys(text) == [("a", True), ("b.c", True), ("b.d", False), ("list", False), ("e", True)]


TEMPLATE_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
NONDETERMINISTIC = re.compile(
    r"\b(lookup|randAlphaNum|randAlpha|randNumeric|randAscii|randBytes|randInt|uuidv4|now|date|"
    r"genCA|genCAWithKey|genSelfSignedCert|genSelfSignedCertWithKey|genSignedCert|"
    r"genSignedCertWithKey|genPrivateKey|derivePassword|htpasswd|unixEpoch)\b"
)


def test_templates_use_no_cluster_lookups_or_random_values() -> None:
    offenders = []
    for path in sorted((CHART / "templates").rglob("*")):
        if path.is_file():
            for action in TEMPLATE_ACTION.findall(path.read_text(encoding="utf-8")):
                if not action.lstrip("-").lstrip().startswith("/*") and NONDETERMINISTIC.search(action):
                    offenders.append(f"{path.relative_to(CHART)}: {{{{{action.strip()}}}}}")
    assert offenders == []


def test_two_renders_are_byte_identical(helm: str) -> None:
    sets = (
        "webhook.certManager.enabled=true",
        "networkPolicy.enabled=true",
        "serviceMonitor.enabled=true",
        "watch.namespaces={a,b}",
    )
    assert template_text(helm) == template_text(helm)
    assert template_text(helm, *sets) == template_text(helm, *sets)


def test_no_key_material_is_ever_rendered(helm: str) -> None:
    for sets in ((), ("webhook.certManager.enabled=true",)):
        text = template_text(helm, *sets)
        assert "caBundle" not in text
        assert "BEGIN " not in text
        assert not find(yaml.safe_load_all(text), "Secret")


# -- names -----------------------------------------------------------------------------------------


def test_default_install_names(default_docs: list[Doc]) -> None:
    expected = {
        ("Deployment", "kube-changejob-controller-manager"),
        ("ServiceAccount", "kube-changejob-controller-manager"),
        ("ClusterRole", "kube-changejob-manager-role"),
        ("ClusterRoleBinding", "kube-changejob-manager-rolebinding"),
        ("Role", "kube-changejob-leader-election-role"),
        ("RoleBinding", "kube-changejob-leader-election-rolebinding"),
        ("CustomResourceDefinition", "changetriggeredjobs.triggers.changejob.dev"),
        ("Service", "kube-changejob-webhook-service"),
        ("Service", "kube-changejob-metrics-service"),
        ("ValidatingWebhookConfiguration", "kube-changejob-validating-webhook"),
        ("PodDisruptionBudget", "kube-changejob-controller-manager"),
        ("NetworkPolicy", "kube-changejob-controller-manager"),
        ("ValidatingAdmissionPolicy", "kube-changejob-ctj-tenancy"),
        ("ValidatingAdmissionPolicy", "kube-changejob-ctj-tenancy-24"),
        ("ValidatingAdmissionPolicy", "kube-changejob-ctj-tenancy-48"),
        ("ValidatingAdmissionPolicyBinding", "kube-changejob-ctj-tenancy"),
        ("ValidatingAdmissionPolicyBinding", "kube-changejob-ctj-tenancy-24"),
        ("ValidatingAdmissionPolicyBinding", "kube-changejob-ctj-tenancy-48"),
        ("ClusterRole", "kube-changejob-ctj-admin"),
        ("ClusterRole", "kube-changejob-ctj-editor"),
        ("ClusterRole", "kube-changejob-ctj-viewer"),
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in default_docs} == expected
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in default_docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "kube-changejob"


def test_other_release_names_prefix_every_cluster_scoped_object(helm: str) -> None:
    docs = render(helm, release="other")
    names = {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"}
    assert all(name.startswith("other-kube-changejob-") for name in names), names


def test_service_names_fit_a_dns_label(helm: str) -> None:
    docs = render(helm, f"fullnameOverride={'x' * 40}")
    services = {d["metadata"]["name"] for d in find(docs, "Service")}
    assert len(services) == 2
    assert all(len(name) <= 63 for name in services)
    hook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["service"]["name"] in services
    assert f"--webhook-service={hook['clientConfig']['service']['name']}" in container(docs)["args"]
    args = container(docs)["args"]
    assert f"--webhook-config={one(docs, 'ValidatingWebhookConfiguration')['metadata']['name']}" in args


# -- the operator Deployment -----------------------------------------------------------------------


def test_operator_arguments(default_docs: list[Doc]) -> None:
    assert container(default_docs)["args"] == [
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--leader-elect=true",
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=2s",
        f"--leader-election-namespace={NAMESPACE}",
        "--shards=16",
        "--poll-interval=60s",
        "--log-level=info",
        "--log-format=json",
        "--namespaces=",
        "--webhook-port=9443",
        "--webhook-cert-mode=self-signed",
        "--webhook-service=kube-changejob-webhook-service",
        "--webhook-config=kube-changejob-validating-webhook",
        "--webhook-tenancy=policy",
    ]


def test_operator_arguments_are_accepted_by_the_operator(default_docs: list[Doc]) -> None:
    from changejob import cli

    config = cli.parse(["run", *container(default_docs)["args"]])
    assert config.leader_election_namespace == NAMESPACE
    assert config.webhook_port == 9443
    assert config.webhook_service == "kube-changejob-webhook-service"
    assert config.webhook_config == "kube-changejob-validating-webhook"
    assert config.webhook_mutating_config == ""
    assert config.webhook_tenancy == "policy"
    assert config.namespaces == []


def test_deployment_shape(default_docs: list[Doc]) -> None:
    deployment = one(default_docs, "Deployment", "kube-changejob-controller-manager")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "kube-changejob-controller-manager"
    spread = spec["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"]
    assert spread[0]["labelSelector"]["matchLabels"] == selector
    c = container(default_docs)
    assert c["image"] == "ghcr.io/nusnewob/kube-changejob:0.1.0"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081, "webhook": 9443}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert not [name for name in env if name.startswith("OTEL_")]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_restricted_pod_security(default_docs: list[Doc]) -> None:
    pod = one(default_docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532
    ctx = container(default_docs)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod["volumes"]:  # restricted allows only these volume types
        assert set(volume) - {"name"} <= {
            "emptyDir",
            "secret",
            "configMap",
            "projected",
            "downwardAPI",
            "persistentVolumeClaim",
            "ephemeral",
            "csi",
        }


def test_otel_values_become_environment(helm: str) -> None:
    docs = render(
        helm,
        "otel.enabled=true",
        "otel.endpoint=http://collector:4318",
        "otel.serviceName=ctj",
        "otel.sampler=traceidratio",
        "otel.samplerArg=0.5",
    )
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_SERVICE_NAME"] == "ctj"
    assert env["OTEL_TRACES_SAMPLER"] == "traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    failed = run_helm(helm, "template", RELEASE, str(CHART), "--set", "otel.enabled=true", check=False)
    assert failed.returncode != 0 and "otel.endpoint" in failed.stderr


def test_image_digest_wins_over_tag(helm: str) -> None:
    digest = "sha256:" + "a" * 64
    docs = render(helm, "image.repository=example.com/ctj", "image.tag=1.2.3", f"image.digest={digest}")
    assert container(docs)["image"] == f"example.com/ctj@{digest}"


@pytest.mark.parametrize(("replicas", "expected"), [(1, 0), (2, 1), (3, 1)])
def test_pod_disruption_budget_only_with_several_replicas(helm: str, replicas: int, expected: int) -> None:
    docs = render(helm, f"replicaCount={replicas}")
    pdbs = find(docs, "PodDisruptionBudget")
    assert len(pdbs) == expected
    if pdbs:
        deployment = one(docs, "Deployment")
        assert pdbs[0]["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdbs[0]["spec"]["minAvailable"] == 1


def test_network_policy_is_on_and_service_monitor_optional(helm: str, default_docs: list[Doc]) -> None:
    assert not find(default_docs, "ServiceMonitor")
    policy = one(default_docs, "NetworkPolicy")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == one(default_docs, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress open: the API server's address is unknown
    assert [[p["port"] for p in rule["ports"]] for rule in policy["spec"]["ingress"]] == [["webhook"], ["metrics"]]
    assert all("from" not in rule for rule in policy["spec"]["ingress"])
    apiserver = [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    narrowed = render(helm, set_json=[f"networkPolicy.webhookFrom={json.dumps(apiserver)}"])
    assert one(narrowed, "NetworkPolicy")["spec"]["ingress"][0]["from"] == apiserver
    assert not find(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy")
    docs = render(helm, "serviceMonitor.enabled=true", "metrics.service.enabled=false")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "kube-changejob-metrics-service")  # the monitor needs it
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


# -- webhook ---------------------------------------------------------------------------------------


SPEC_CHANGED = "request.operation == 'CREATE' || object.spec != oldObject.spec"


def test_webhook_configuration(default_docs: list[Doc]) -> None:
    service = one(default_docs, "Service", "kube-changejob-webhook-service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    assert not find(default_docs, "MutatingWebhookConfiguration")  # the CRD schema fills the defaults
    config = one(default_docs, "ValidatingWebhookConfiguration")
    assert "annotations" not in config["metadata"]
    references, spec = config["webhooks"]
    for hook, path, policy in (
        (references, "/validate-ctj/references", "Fail"),
        (spec, "/validate-ctj/spec", "Ignore"),
    ):
        assert hook["clientConfig"] == {
            "service": {"name": "kube-changejob-webhook-service", "namespace": NAMESPACE, "path": path, "port": 443}
        }
        # the spec only: never the status subresource
        assert hook["rules"] == [
            {
                "apiGroups": ["triggers.changejob.dev"],
                "apiVersions": ["v1alpha"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["changetriggeredjobs"],
                "scope": "Namespaced",
            }
        ]
        assert hook["failurePolicy"] == policy
        assert hook["matchConditions"][0] == {"name": "spec-changed", "expression": SPEC_CHANGED}
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 10
    (_, outside) = references["matchConditions"]
    assert outside["name"] == "names-a-kind-outside-the-policy-table"
    assert "'v1/ConfigMap': ['configmaps', 'Namespaced']" in outside["expression"]
    assert len(spec["matchConditions"]) == 1


def test_without_the_admission_policy_the_webhook_checks_every_spec_change(helm: str) -> None:
    docs = render(helm, "admissionPolicy.enabled=false", "webhook.failurePolicy=Ignore")
    assert not find(docs, "ValidatingAdmissionPolicy") and not find(docs, "ValidatingAdmissionPolicyBinding")
    references = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert references["failurePolicy"] == "Fail"  # tenancy must not fail open
    assert [c["name"] for c in references["matchConditions"]] == ["spec-changed"]
    assert "--webhook-tenancy=webhook" in container(docs)["args"]
    role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    assert verbs_for(role, "authorization.k8s.io", "subjectaccessreviews") == {"create"}
    lenient = render(helm, "webhook.failurePolicy=Ignore")
    assert one(lenient, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Ignore"


def test_admission_policies(default_docs: list[Doc], helm: str) -> None:
    policies = find(default_docs, "ValidatingAdmissionPolicy")
    bindings = {b["metadata"]["name"]: b for b in find(default_docs, "ValidatingAdmissionPolicyBinding")}
    checked: list[int] = []
    for policy in policies:
        name = policy["metadata"]["name"]
        spec = policy["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert "paramKind" not in spec  # nothing that could be missing
        assert spec["matchConstraints"] == {  # as the API server stores it: adoption sends no change
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": {},
            "resourceRules": [
                {
                    "apiGroups": ["triggers.changejob.dev"],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["changetriggeredjobs"],
                    "scope": "*",
                }
            ],
        }
        assert spec["matchConditions"] == [{"name": "spec-changed", "expression": SPEC_CHANGED}]
        assert policy["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert bindings[name]["spec"] == {"policyName": name, "validationActions": ["Deny"]}  # every namespace
        authorizations = [v["expression"].count(".check(") for v in spec["validations"]]
        assert max(authorizations) == 1  # the API server allows two per expression
        assert sum(authorizations) <= 28  # and ~28 per binding
        checked += [
            int(i) for v in spec["validations"] for i in re.findall(r"variables\.refs\[(\d+)\]\.group", v["expression"])
        ]
    assert sorted(checked) == list(range(64))  # every reference the CRD allows, each once
    crd = one(default_docs, "CustomResourceDefinition")
    resources = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["resources"]
    assert resources["maxItems"] == 64
    unkept = find(render(helm, "crds.keep=false"), "ValidatingAdmissionPolicy")
    assert unkept and all("annotations" not in p["metadata"] for p in unkept)


def test_admission_policy_kinds_extend_the_table(helm: str) -> None:
    extra = [{"apiVersion": "example.com/v1", "kind": "Mouse", "resource": "mice", "namespaced": True}]
    docs = render(helm, set_json=[f"admissionPolicy.kinds={json.dumps(extra)}"])
    kinds = one(docs, "ValidatingAdmissionPolicy", "kube-changejob-ctj-tenancy")["spec"]["variables"]
    (table,) = [v["expression"] for v in kinds if v["name"] == "kinds"]
    assert "'example.com/v1/Mouse': ['mice', 'Namespaced']" in table
    webhook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["matchConditions"][1]["expression"]
    assert "'example.com/v1/Mouse': ['mice', 'Namespaced']" in webhook
    bad = run_helm(
        helm,
        "template",
        "x",
        str(CHART),
        "--set-json",
        'admissionPolicy.kinds=[{"apiVersion": "v1", "kind": "Evil\'"}]',
        check=False,
    )
    assert bad.returncode != 0


def test_cert_manager_mode(helm: str) -> None:
    docs = render(helm, "webhook.certManager.enabled=true")
    certificate = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert "kube-changejob-webhook-service.kube-changejob-system.svc" in certificate["spec"]["dnsNames"]
    ref = f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert (
        one(docs, "ValidatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == ref
    )
    role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    assert not rules_for(role, "admissionregistration.k8s.io", "validatingwebhookconfigurations")  # nothing to patch
    c = container(docs)
    assert "--webhook-cert-mode=cert-manager" in c["args"]
    secret_volumes = [v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in secret_volumes] == [certificate["spec"]["secretName"]]
    external = render(
        helm,
        "webhook.certManager.enabled=true",
        "webhook.certManager.issuerRef.name=corp-ca",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert not find(external, "Issuer")
    assert one(external, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_webhook_disabled_removes_all_of_it(helm: str) -> None:
    docs = render(helm, "webhook.enabled=false", "webhook.certManager.enabled=true")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ValidatingWebhookConfiguration", "Certificate", "Issuer"}
    assert "ValidatingAdmissionPolicy" in kinds  # tenancy does not depend on the webhook
    assert not find(docs, "Service", "kube-changejob-webhook-service")
    c = container(docs)
    assert not [a for a in c["args"] if a.startswith("--webhook")]
    assert "webhook" not in {p["name"] for p in c["ports"]}
    role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    assert not rules_for(role, "admissionregistration.k8s.io", "validatingwebhookconfigurations")


# -- RBAC ------------------------------------------------------------------------------------------


def test_cluster_wide_rbac_is_least_privilege(default_docs: list[Doc]) -> None:
    role = one(default_docs, "ClusterRole", "kube-changejob-manager-role")
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] and "*" not in rule["resources"] and "*" not in rule["verbs"]
    for group, resource in (
        ("", "configmaps"),
        ("", "secrets"),
        ("", "nodes"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    ):
        assert verbs_for(role, group, resource) == {"get", "list", "watch"}, resource
    # Only what the operator does: Jobs are created, read and pruned, never modified; CTJs are read
    # and only their status is written.
    assert verbs_for(role, "batch", "jobs") == {"create", "delete", "get", "list", "watch"}
    assert verbs_for(role, "triggers.changejob.dev", "changetriggeredjobs") == {"get", "list", "watch"}
    assert verbs_for(role, "triggers.changejob.dev", "changetriggeredjobs/status") == {"update"}
    assert verbs_for(role, "triggers.changejob.dev", "changetriggeredjobs/finalizers") == set()
    assert verbs_for(role, "", "events") == {"create"}
    assert verbs_for(role, "events.k8s.io", "events") == set()
    assert verbs_for(role, "authorization.k8s.io", "subjectaccessreviews") == set()  # the policy checks tenancy
    assert verbs_for(role, "", "pods") == set()
    assert verbs_for(role, "coordination.k8s.io", "leases") == set()
    (rule,) = rules_for(role, "admissionregistration.k8s.io", "validatingwebhookconfigurations")
    assert rule["resourceNames"] == ["kube-changejob-validating-webhook"]
    assert set(rule["verbs"]) == {"get", "patch"}
    assert not rules_for(role, "admissionregistration.k8s.io", "mutatingwebhookconfigurations")
    binding = one(default_docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "kube-changejob-manager-role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-changejob-controller-manager", "namespace": NAMESPACE}
    ]


def test_release_namespace_role(default_docs: list[Doc]) -> None:
    role = one(default_docs, "Role", "kube-changejob-leader-election-role", NAMESPACE)
    assert verbs_for(role, "coordination.k8s.io", "leases") == {"get", "list", "create", "update", "delete"}
    assert verbs_for(role, "", "secrets") == {"get", "create", "update"}
    by_name = {name: set(r["verbs"]) for r in rules_for(role, "", "secrets") for name in r.get("resourceNames", [])}
    assert by_name == {"kube-changejob-hash-key": {"get"}, "kube-changejob-webhook-service-cert": {"get", "update"}}
    assert verbs_for(role, "", "events") == set()
    assert verbs_for(role, "batch", "jobs") == set()  # cluster-wide, the ClusterRole covers the dry-run
    binding = one(default_docs, "RoleBinding", "kube-changejob-leader-election-rolebinding", NAMESPACE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kube-changejob-leader-election-role",
    }


def test_all_resources_is_an_explicit_opt_in(helm: str) -> None:
    docs = render(helm, "watch.allResources=true")
    role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    (rule,) = [r for r in role["rules"] if r["resources"] == ["*"]]
    assert rule == {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}


def test_custom_watch_resources(helm: str) -> None:
    docs = render(helm, set_json=['watch.resources=[{"apiGroup": "example.com", "resources": ["widgets", "gadgets"]}]'])
    role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    assert verbs_for(role, "example.com", "widgets") == {"get", "list", "watch"}
    assert verbs_for(role, "", "configmaps") == set()


def test_namespaced_mode_uses_roles(helm: str) -> None:
    docs = render(helm, "watch.namespaces={team-a,team-b}")
    assert "--namespaces=team-a,team-b" in container(docs)["args"]
    cluster_role = one(docs, "ClusterRole", "kube-changejob-manager-role")
    for group, resource in (
        ("", "configmaps"),
        ("", "secrets"),
        ("apps", "deployments"),
        ("batch", "jobs"),
        ("", "pods"),
        ("", "events"),
    ):
        assert verbs_for(cluster_role, group, resource) == set(), resource
    assert verbs_for(cluster_role, "", "nodes") == {"get", "list", "watch"}  # cluster-scoped: listed
    assert verbs_for(cluster_role, "triggers.changejob.dev", "changetriggeredjobs")
    for namespace in ("team-a", "team-b"):
        role = one(docs, "Role", "kube-changejob-watch-role", namespace)
        assert verbs_for(role, "", "configmaps") == {"get", "list", "watch"}
        assert verbs_for(role, "apps", "daemonsets") == {"get", "list", "watch"}
        assert verbs_for(role, "", "nodes") == set()
        assert "create" in verbs_for(role, "batch", "jobs")
        assert verbs_for(role, "", "events") == {"create"}
        binding = one(docs, "RoleBinding", "kube-changejob-watch-rolebinding", namespace)
        assert binding["roleRef"]["name"] == "kube-changejob-watch-role"
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    release_role = one(docs, "Role", "kube-changejob-leader-election-role", NAMESPACE)
    assert verbs_for(release_role, "batch", "jobs") == {"create"}  # the webhook's dry-run of Job templates
    without_nodes = render(
        helm, "watch.namespaces={team-a}", set_json=['watch.resources=[{"apiGroup": "", "resources": ["configmaps"]}]']
    )
    assert verbs_for(one(without_nodes, "ClusterRole", "kube-changejob-manager-role"), "", "nodes") == set()


def test_aggregated_user_roles(default_docs: list[Doc]) -> None:
    expected = {
        "admin": "kube-changejob-ctj-admin",
        "edit": "kube-changejob-ctj-editor",
        "view": "kube-changejob-ctj-viewer",
    }
    for aggregate, name in expected.items():
        role = one(default_docs, "ClusterRole", name)
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{aggregate}"] == "true"
        verbs = verbs_for(role, "triggers.changejob.dev", "changetriggeredjobs")
        assert {"get", "list", "watch"} <= verbs
        assert ("create" in verbs) == (aggregate != "view")


# -- the CRD and the generated files ---------------------------------------------------------------


def test_chart_crd_is_the_source_crd(default_docs: list[Doc]) -> None:
    source = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    rendered = one(default_docs, "CustomResourceDefinition")
    assert rendered["spec"] == source["spec"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crd_values(helm: str) -> None:
    assert "annotations" not in one(render(helm, "crds.keep=false"), "CustomResourceDefinition")["metadata"]
    assert not find(render(helm, "crds.install=false"), "CustomResourceDefinition")


def test_generated_files_are_up_to_date(helm: str) -> None:
    result = subprocess.run(
        [str(REPO / "tools" / "render.sh"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "HELM": helm},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dist_install_is_the_chart_plus_namespace(helm: str, default_docs: list[Doc]) -> None:
    dist = [d for d in yaml.safe_load_all((REPO / "dist" / "install.yaml").read_text(encoding="utf-8")) if d]
    namespace = dist[0]
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the chart's objects, except that kubectl, not Helm, manages them: no managed-by label, which
    # `helm install --take-ownership` adds later without a field conflict
    for doc in default_docs:
        for labels in (
            doc["metadata"]["labels"],
            doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels"),
        ):
            if labels:
                assert labels.pop("app.kubernetes.io/managed-by") == "Helm"
    assert dist[1:] == default_docs
    assert "managed-by" not in (REPO / "dist" / "install.yaml").read_text(encoding="utf-8")


def test_every_field_ref_names_its_api_version(default_docs: list[Doc]) -> None:
    # the API server fills apiVersion: v1 in; a manifest without it conflicts when Helm adopts it
    env = container(default_docs)["env"]
    refs = [e["valueFrom"]["fieldRef"] for e in env if "fieldRef" in e.get("valueFrom", {})]
    assert refs and all(ref["apiVersion"] == "v1" for ref in refs)


def test_kustomization_installs_the_same_objects(default_docs: list[Doc]) -> None:
    kustomization = yaml.safe_load((REPO / "config" / "default" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["install.yaml"]
    assert (REPO / "config" / "default" / "install.yaml").read_bytes() == (REPO / "dist" / "install.yaml").read_bytes()
    kubectl = _tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / "config" / "default")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]

    def key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
        return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]

    assert sorted(map(key, built)) == sorted(
        map(key, [*default_docs, {"kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    )


def test_notes_tell_the_next_command(helm: str) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/kube-changejob-controller-manager" in notes


# -- docs/install.md's RBAC table is the chart's grants, in every mode --------------------------------

INSTALL = REPO / "docs" / "install.md"
WATCHED = "watch.resources"

Grant = tuple[str, str, str, str, frozenset[str]]  # role, group, resource, resource name, verbs


def rbac_table() -> list[tuple[Grant, str]]:
    """(grant, when) for each row of the RBAC table."""
    text = INSTALL.read_text(encoding="utf-8")
    section = text[text.index("## RBAC") : text.index("### Namespaced mode")]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith(("ClusterRole", "Role")):
            continue
        role_cell, group, resource_cell, verbs, when, _ = cells
        role = re.search(r"`<release>-([a-z-]+)`", role_cell)
        assert role, role_cell
        named = re.fullmatch(r"`([^`]+)`(?: named `([^`]+)`)?", resource_cell)
        assert named, resource_cell
        resource, name = named.group(1), (named.group(2) or "").replace("<release>", RELEASE)
        kind = "ClusterRole" if role_cell.startswith("ClusterRole") else "Role"
        grant = (
            f"{kind} {role.group(1)}",
            group.strip("`").replace('""', ""),
            resource,
            name,
            frozenset(v.strip() for v in verbs.split(",")),
        )
        rows.append((grant, when))
    assert len(rows) >= 12
    return rows


def applies(when: str, values: Mapping[str, Any]) -> bool:
    namespaced = bool(values["namespaces"])
    webhook = values["webhook"]
    conditions = {
        "always": True,
        "cluster-wide": not namespaced,
        "namespaced": namespaced,
        "self-signed": webhook and not values["cert_manager"],
        "no policy": webhook and not values["policy"],
        "webhook": webhook,
    }
    return all(conditions[part.strip()] for part in when.split(","))


def granted(docs: list[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        name = doc["metadata"]["name"]
        if not name.startswith(f"{RELEASE}-") or name.startswith(f"{RELEASE}-ctj-"):
            continue  # the aggregated user roles are not the operator's
        role = f"{doc['kind']} {name.removeprefix(RELEASE + '-')}"
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for resource_name in rule.get("resourceNames") or [""]:
                        out.add((role, group, resource, resource_name, frozenset(rule["verbs"])))
    return out


WATCH = [
    {"apiGroup": "", "resources": ["configmaps", "secrets"]},
    {"apiGroup": "", "resources": ["nodes"], "clusterScoped": True},
    {"apiGroup": "apps", "resources": ["deployments", "statefulsets", "daemonsets"]},
]
MODES = [
    {"namespaces": [], "webhook": True, "cert_manager": False, "policy": True},
    {"namespaces": ["team-a"], "webhook": True, "cert_manager": False, "policy": True},
    {"namespaces": [], "webhook": True, "cert_manager": False, "policy": False},
    {"namespaces": ["team-a"], "webhook": True, "cert_manager": True, "policy": True},
    {"namespaces": [], "webhook": False, "cert_manager": False, "policy": True},
]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_the_install_docs_rbac_table_is_what_the_chart_grants(helm: str, mode: Mapping[str, Any]) -> None:
    sets = [
        f"webhook.enabled={str(mode['webhook']).lower()}",
        f"webhook.certManager.enabled={str(mode['cert_manager']).lower()}",
        f"admissionPolicy.enabled={str(mode['policy']).lower()}",
    ]
    if mode["namespaces"]:
        sets.append(f"watch.namespaces={{{','.join(mode['namespaces'])}}}")
    actual = granted(render(helm, *sets))
    watched = {
        (group, resource, bool(entry.get("clusterScoped")))
        for entry in WATCH
        for group in [entry["apiGroup"]]
        for resource in entry["resources"]
    }
    watch_role = "ClusterRole manager-role" if not mode["namespaces"] else "Role watch-role"
    expected: set[Grant] = set()
    for (role, group, resource, name, verbs), when in rbac_table():
        if resource == WATCHED:
            if applies(when, mode):
                expected |= {(role, g, r, "", verbs) for g, r, cluster in watched if not cluster}
            continue
        if applies(when, mode):
            expected.add((role, group, resource, name, verbs))
    # types marked clusterScoped are granted by the ClusterRole in every mode
    expected |= {
        ("ClusterRole manager-role", g, r, "", frozenset({"get", "list", "watch"})) for g, r, c in watched if c
    }
    assert watch_role in {g[0] for g in actual}
    extra, missing = sorted(actual - expected), sorted(expected - actual)
    assert actual == expected, f"granted, not in the table: {extra}\nin the table, not granted: {missing}"
