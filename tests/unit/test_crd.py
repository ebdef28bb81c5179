"""The ChangeTriggeredJob CRD (crds/), checked as data: names, schema rules, defaults, docs.

The CRD is the single source of truth of the API; docs/api.md explains it and the domain parser
(changejob.domain.api) applies the same defaults and duration grammar, so these tests tie the three
together. Whether a real API server accepts the CRD is checked by the integration tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from changejob.domain import api

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
API_DOC = REPO / "docs" / "api.md"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def version(crd: Mapping[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    found: dict[str, Any] = versions[0]
    return found


@pytest.fixture(scope="module")
def schema(version: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return found


@pytest.fixture(scope="module")
def spec(schema: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = schema["properties"]["spec"]
    return found


@pytest.fixture(scope="module")
def status(schema: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = schema["properties"]["status"]
    return found


def walk(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node with its dotted path (array items as ``[]``)."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), Mapping):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_names_group_and_scope(crd: Mapping[str, Any], version: Mapping[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "changetriggeredjobs.triggers.changejob.dev"
    s = crd["spec"]
    assert s["group"] == api.GROUP == "triggers.changejob.dev"
    assert s["scope"] == "Namespaced"
    assert s["names"] == {
        "kind": api.KIND,
        "listKind": "ChangeTriggeredJobList",
        "plural": api.PLURAL,
        "singular": "changetriggeredjob",
        "shortNames": ["ctj", "ctjs"],
        "categories": ["all", "changejob"],
    }
    assert version["name"] == api.VERSION == "v1alpha"
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_every_field_has_a_description(schema: Mapping[str, Any]) -> None:
    # The root `metadata` may carry nothing but name/generateName rules (the API server refuses a
    # description there); `kubectl explain` shows ObjectMeta's own documentation for it.
    missing = [
        path or "<root>"
        for path, node in walk(schema)
        if path != "metadata" and not str(node.get("description", "")).strip()
    ]
    assert missing == []


def test_the_schema_is_structural(schema: Mapping[str, Any]) -> None:
    for path, node in walk(schema):
        assert "type" in node, f"{path} has no type"
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", path
        if node["type"] == "array":
            assert isinstance(node.get("items"), Mapping), f"{path} has no items schema"


def test_every_free_string_is_bounded(schema: Mapping[str, Any]) -> None:
    unbounded = [
        path
        for path, node in walk(schema)
        if node.get("type") == "string"
        and "enum" not in node
        and "format" not in node
        and "maxLength" not in node
        and path not in ("apiVersion", "kind")
    ]
    assert unbounded == []


def test_every_list_is_bounded_and_typed(schema: Mapping[str, Any]) -> None:
    for path, node in walk(schema):
        if node.get("type") == "array":
            assert "x-kubernetes-list-type" in node, path
            if not path.startswith("spec.jobTemplate"):
                assert "maxItems" in node, f"{path} has no maxItems (CEL cost and object size)"


def test_spec_defaults_match_the_domain(spec: Mapping[str, Any]) -> None:
    props = spec["properties"]
    assert spec["required"] == ["jobTemplate", "resources"]
    assert props["condition"]["default"] == api.DEFAULT_CONDITION.value == "Any"
    assert props["condition"]["enum"] == [c.value for c in api.Condition] == ["Any", "All"]
    assert props["cooldown"]["default"] == "60s"
    assert api.parse_duration(props["cooldown"]["default"]) == api.DEFAULT_COOLDOWN
    assert props["history"]["default"] == api.DEFAULT_HISTORY == 5
    assert props["history"]["minimum"] == 1
    assert props["history"]["type"] == "integer"
    fields = props["resources"]["items"]["properties"]["fields"]
    assert fields["default"] == list(api.DEFAULT_FIELDS) == ["*"]
    assert fields["minItems"] == 1
    assert fields["x-kubernetes-list-type"] == "set"  # the domain rejects duplicate paths too


def test_resources_entries(spec: Mapping[str, Any]) -> None:
    resources = spec["properties"]["resources"]
    assert resources["type"] == "array"
    assert resources["minItems"] == 1
    item = resources["items"]
    assert item["required"] == ["apiVersion", "kind", "name"]
    assert set(item["properties"]) == {"apiVersion", "kind", "name", "namespace", "fields"}


def test_cooldown_pattern_is_the_domain_grammar(spec: Mapping[str, Any]) -> None:
    pattern = spec["properties"]["cooldown"]["pattern"]
    assert pattern == api.DURATION_PATTERN
    regex = re.compile(pattern)
    for good in ("0", "0s", "30s", "15m", "1h30m", "1.5h", "300ms", "10us", "10µs", "2h45m30.5s"):
        assert regex.fullmatch(good), good
        api.parse_duration(good)  # the operator accepts what the API server lets through
    for bad in ("", "5", "5x", "-1s", "1d", "s", "1h 30m", "60 s"):
        assert not regex.fullmatch(bad), bad


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        (
            "apiVersion",
            ["v1", "apps/v1", "example.com/v1alpha1", "triggers.changejob.dev/v1alpha"],
            ["", "V1", "apps/", "/v1", "apps/v1/x", "Apps/v1"],
        ),
        ("kind", ["ConfigMap", "Node", "my-kind"], ["", "1Kind", "Config Map", "kind-"]),
        ("namespace", ["default", "kube-system", "a", ""], ["Default", "-a", "a-", "a.b"]),
    ],
)
def test_reference_patterns(spec: Mapping[str, Any], field: str, good: list[str], bad: list[str]) -> None:
    regex = re.compile(spec["properties"]["resources"]["items"]["properties"][field]["pattern"])
    for value in good:
        assert regex.fullmatch(value), value
    for value in bad:
        assert not regex.fullmatch(value), value


def test_job_template_keeps_the_job_spec(spec: Mapping[str, Any]) -> None:
    template = spec["properties"]["jobTemplate"]
    assert template["required"] == ["spec"]
    metadata = template["properties"]["metadata"]["properties"]
    assert set(metadata) == {"labels", "annotations"}
    for name in ("labels", "annotations"):
        assert metadata[name]["additionalProperties"]["type"] == "string"
    job_spec = template["properties"]["spec"]
    assert job_spec["type"] == "object"
    assert job_spec["x-kubernetes-preserve-unknown-fields"] is True
    assert job_spec["required"] == ["template"]
    pod_spec = job_spec["properties"]["template"]["properties"]["spec"]
    assert pod_spec["x-kubernetes-preserve-unknown-fields"] is True
    assert pod_spec["properties"]["restartPolicy"]["enum"] == ["Never", "OnFailure"]


def test_cel_rules(schema: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any(f"<= {api.MAX_NAME_LENGTH}" in rule for rule in root_rules)
    spec_rules = [" ".join(r["rule"].split()) for r in spec["x-kubernetes-validations"]]
    assert any("exists_one" in rule for rule in spec_rules)
    # `namespace` is a CEL keyword: the API server only resolves it escaped.
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", ()):
            assert not re.search(r"\.namespace\b", rule["rule"]), path
            assert rule.get("message"), path
    (kind_rule,) = [
        r for r in spec["properties"]["resources"]["items"]["x-kubernetes-validations"] if ".kind" in r["rule"]
    ]
    # the guide's words for "kind: configmap", with no webhook involved
    assert kind_rule["message"].startswith("resource kind does not exist")
    assert "'resource kind does not exist: ' + self.kind" in kind_rule["messageExpression"]
    assert re.match(kind_rule["rule"].split("'")[1], "ConfigMap") and not re.match(
        kind_rule["rule"].split("'")[1], "configmap"
    )


def test_status_defaults_to_no_generation_observed(status: Mapping[str, Any]) -> None:
    # Until the operator writes status, kstatus and Argo CD read "generation 1, observed 0": in progress.
    assert status["default"] == {"observedGeneration": 0}


def test_status_schema(status: Mapping[str, Any]) -> None:
    props = status["properties"]
    assert set(props) == {
        "observedGeneration",
        "conditions",
        "resourceHashes",
        "triggerCount",
        "lastTriggeredTime",
        "lastJobName",
        "lastJobStatus",
        "nextTriggerTime",
    }
    conditions = props["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"
    for reason in ("Reconciled", "InvalidSpec", "ResourceMissing", "CooldownDeferred", "AsExpected"):
        assert re.fullmatch(condition["properties"]["reason"]["pattern"], reason)
    assert props["lastJobStatus"]["enum"] == ["Active", "Succeeded", "Failed"]
    for name in ("lastTriggeredTime", "nextTriggerTime"):
        assert props[name]["format"] == "date-time"
    assert props["triggerCount"]["type"] == "integer"
    assert props["observedGeneration"]["format"] == "int64"
    entry = props["resourceHashes"]["items"]["properties"]
    assert set(entry) == {
        "apiVersion",
        "kind",
        "name",
        "namespace",
        "fields",
        "hash",
        "lastTriggeredHash",
        "changed",
        "state",
        "message",
    }
    assert entry["state"]["enum"] == ["Present", "Missing", "Forbidden", "Unknown"]
    assert set(entry["fields"]["items"]["properties"]) == {"field", "hash", "lastTriggeredHash"}


def test_printer_columns(version: Mapping[str, Any]) -> None:
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Condition", "string", ".spec.condition"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Last Job", "string", ".status.lastJobName"),
        ("Last Status", "string", ".status.lastJobStatus"),
        ("Last Triggered", "date", ".status.lastTriggeredTime"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def _doc_fields(section: str) -> set[str]:
    """The field names in the first column of docs/api.md's table under ``## section``."""
    text = API_DOC.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE))


def test_docs_describe_exactly_the_schema(spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    def plain(names: set[str]) -> set[str]:
        return {name.replace("[]", "") for name in names}

    item = spec["properties"]["resources"]["items"]["properties"]
    schema_spec = set(spec["properties"]) | {f"resources.{name}" for name in item}
    assert plain(_doc_fields("spec")) == schema_spec
    assert plain(_doc_fields("status")) == set(status["properties"])


def test_the_crd_file_has_no_template_delimiters() -> None:
    # tools/render.sh copies it verbatim into a Helm template.
    text = CRD_PATH.read_text(encoding="utf-8")
    assert "{{" not in text and "}}" not in text
