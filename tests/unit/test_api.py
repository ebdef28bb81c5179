"""Parsing, defaulting and validating a CTJ spec; Go durations."""

from __future__ import annotations

import copy
import datetime
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import api

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
seconds = datetime.timedelta


def job_template(command: str = "sync") -> dict[str, Any]:
    return {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "c", "image": "busybox:latest", "command": [command]}],
                    "restartPolicy": "Never",
                }
            }
        }
    }


def config_map(name: Any = "app-config", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": "default", **extra}


# ---------------------------------------------------------------------------------------------
# The guide's examples


def test_first_trigger_gets_all_defaults() -> None:
    spec = api.parse_spec({"jobTemplate": job_template(), "resources": [config_map("my-config")]})
    assert spec.condition is api.Condition.ANY
    assert spec.cooldown == seconds(seconds=60)
    assert spec.history == 5
    assert spec.resources == (
        api.ResourceRef(api_version="v1", kind="ConfigMap", name="my-config", namespace="default", fields=("*",)),
    )
    assert spec.job_template == job_template()


def test_multi_resource_all() -> None:
    spec = api.parse_spec(
        {
            "jobTemplate": job_template(),
            "resources": [
                config_map(),
                {"apiVersion": "v1", "kind": "Secret", "name": "app-secret", "namespace": "default"},
            ],
            "condition": "All",
            "cooldown": "300s",
        }
    )
    assert spec.condition is api.Condition.ALL
    assert spec.cooldown == seconds(minutes=5)
    assert [r.describe() for r in spec.resources] == ["ConfigMap/default/app-config", "Secret/default/app-secret"]


def test_deployment_fields() -> None:
    fields = [
        "spec.replicas",
        "spec.template.spec.containers[*].image",
        "spec.template.spec.containers[*].resources",
    ]
    spec = api.parse_spec(
        {
            "jobTemplate": job_template(),
            "resources": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "namespace": "default", "fields": fields}
            ],
            "cooldown": "30s",
        }
    )
    (ref,) = spec.resources
    assert ref.fields == tuple(fields)
    assert (ref.group, ref.version) == ("apps", "v1")
    assert spec.cooldown == seconds(seconds=30)


def test_cluster_scoped_node() -> None:
    spec = api.parse_spec(
        {
            "jobTemplate": job_template(),
            "resources": [{"apiVersion": "v1", "kind": "Node", "name": "worker-1"}],
            "cooldown": "300s",
        }
    )
    (ref,) = spec.resources
    assert ref.namespace is None
    assert ref.describe() == "Node/worker-1"
    assert (ref.group, ref.version) == ("", "v1")


def test_backup_example() -> None:
    template = job_template("backup")
    template["spec"]["backoffLimit"] = 3
    spec = api.parse_spec(
        {
            "jobTemplate": template,
            "resources": [
                {"apiVersion": "v1", "kind": "Secret", "name": "database-credentials", "namespace": "database"},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "database-config", "namespace": "database"},
            ],
            "condition": "Any",
            "cooldown": "3600s",
            "history": 24,
        }
    )
    assert spec.cooldown == seconds(hours=1)
    assert spec.history == 24
    assert spec.job_template["spec"]["backoffLimit"] == 3


def test_custom_resource_group_and_version() -> None:
    ref = api.parse_spec(
        {
            "jobTemplate": job_template(),
            "resources": [{"apiVersion": "example.com/v1beta1", "kind": "Widget", "name": "w", "namespace": "ns"}],
        }
    ).resources[0]
    assert (ref.group, ref.version, ref.api_version) == ("example.com", "v1beta1", "example.com/v1beta1")


def test_rbac_names_with_colons_are_accepted() -> None:
    ref = api.parse_spec(
        {
            "jobTemplate": job_template(),
            "resources": [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "name": "system:aggregate-to-view",
                }
            ],
        }
    ).resources[0]
    assert ref.name == "system:aggregate-to-view"


def test_empty_namespace_means_none() -> None:
    spec = api.parse_spec({"jobTemplate": job_template(), "resources": [config_map(namespace="")]})
    assert spec.resources[0].namespace is None


def test_parse_spec_does_not_modify_its_input() -> None:
    raw = {"jobTemplate": job_template(), "resources": [config_map()]}
    before = copy.deepcopy(raw)
    api.parse_spec(raw)
    assert raw == before


# ---------------------------------------------------------------------------------------------
# Errors


def errors_of(spec: Any) -> tuple[str, ...]:
    with pytest.raises(api.SpecError) as caught:
        api.parse_spec(spec)
    assert isinstance(caught.value, ValueError)
    for error in caught.value.errors:
        assert error.startswith("spec"), error
    return caught.value.errors


def test_invalid_field_path_error_names_the_field() -> None:
    (error,) = errors_of(
        {"jobTemplate": job_template(), "resources": [config_map(fields=["data", "data["])]},
    )
    assert error.startswith('spec.resources[0].fields[1]: invalid field path "data[": unbalanced bracket')


def test_all_problems_are_reported_at_once() -> None:
    errors = errors_of(
        {
            "resources": [
                {"apiVersion": "", "kind": "ConfigMap", "fields": ["data", "a..", "data"]},
                "not-an-object",
            ],
            "condition": "Sometimes",
            "cooldown": "-5s",
            "history": 0,
        }
    )
    assert errors == (
        "spec.resources[0].apiVersion: must not be empty",
        "spec.resources[0].name: required",
        "spec.resources[0].fields[1]: invalid field path \"a..\": recursive descent '..' needs a field name "
        "or bracket after it at position 1",
        'spec.resources[0].fields[2]: duplicate field path "data"',
        "spec.resources[1]: must be an object, got string",
        'spec.condition: must be one of "Any", "All", got "Sometimes"',
        "spec.cooldown: invalid duration '-5s': must not be negative",
        "spec.history: must be at least 1, got 0",
        "spec.jobTemplate: required",
    )


def test_spec_error_message_lists_every_problem() -> None:
    error = api.SpecError(["spec.a: x", "spec.b: y"])
    assert str(error) == "invalid spec (2 problems): spec.a: x; spec.b: y"
    assert str(api.SpecError(["spec.a: x"])) == "invalid spec: spec.a: x"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"resources": None}, "spec.resources: required"),
        ({"resources": []}, "spec.resources: must list at least one resource"),
        ({"resources": {"a": 1}}, "spec.resources: must be an array, got object"),
        ({"resources": [config_map(kind=None)]}, "spec.resources[0].kind: required"),
        ({"resources": [config_map(kind="  ")]}, "spec.resources[0].kind: must not be empty"),
        ({"resources": [config_map(kind="Config Map")]}, 'spec.resources[0].kind: invalid kind "Config Map"'),
        ({"resources": [config_map(name=5)]}, "spec.resources[0].name: must be a string, got number"),
        ({"resources": [config_map(name="a/b")]}, 'spec.resources[0].name: invalid name "a/b"'),
        ({"resources": [config_map(name="..")]}, 'spec.resources[0].name: invalid name ".."'),
        ({"resources": [config_map(apiVersion="apps/")]}, 'spec.resources[0].apiVersion: invalid apiVersion "apps/"'),
        ({"resources": [config_map(apiVersion="a/b/v1")]}, "spec.resources[0].apiVersion: invalid apiVersion"),
        ({"resources": [config_map(namespace="Default")]}, 'spec.resources[0].namespace: invalid namespace "Default"'),
        ({"resources": [config_map(namespace=["x"])]}, "spec.resources[0].namespace: must be a string, got array"),
        ({"resources": [config_map(fields=[])]}, "spec.resources[0].fields: must list at least one field path"),
        ({"resources": [config_map(fields="data")]}, "spec.resources[0].fields: must be an array of field paths"),
        ({"resources": [config_map(fields=[3])]}, "spec.resources[0].fields[0]: must be a string, got number"),
        ({"resources": [config_map(fields=["data", ""])]}, 'spec.resources[0].fields[1]: invalid field path ""'),
        ({"condition": "any"}, 'spec.condition: must be one of "Any", "All", got "any"'),
        ({"condition": 1}, 'spec.condition: must be one of "Any", "All", got number'),
        ({"cooldown": 30}, 'spec.cooldown: must be a duration string such as "30s", got number'),
        ({"cooldown": "5 minutes"}, "spec.cooldown: invalid duration '5 minutes': expected a Go duration"),
        ({"cooldown": "1d"}, "spec.cooldown: invalid duration '1d'"),
        ({"history": -1}, "spec.history: must be at least 1, got -1"),
        ({"history": "5"}, "spec.history: must be an integer, got string"),
        ({"history": True}, "spec.history: must be an integer, got boolean"),
        ({"history": 2.5}, "spec.history: must be an integer, got number"),
        ({"jobTemplate": []}, "spec.jobTemplate: must be an object, got array"),
        ({"jobTemplate": {}}, "spec.jobTemplate.spec: required"),
        ({"jobTemplate": {"spec": "x"}}, "spec.jobTemplate.spec: must be an object, got string"),
        ({"jobTemplate": {"spec": {}}}, "spec.jobTemplate.spec.template: required"),
        ({"jobTemplate": {"spec": {"template": 1}}}, "spec.jobTemplate.spec.template: must be an object"),
        (
            {"jobTemplate": {"metadata": {"labels": {"a": 1}}, **job_template()}},
            "spec.jobTemplate.metadata.labels[a]: must be a string, got number",
        ),
        (
            {"jobTemplate": {"metadata": {"annotations": "x"}, **job_template()}},
            "spec.jobTemplate.metadata.annotations: must be an object, got string",
        ),
        ({"jobTemplate": {"metadata": 3, **job_template()}}, "spec.jobTemplate.metadata: must be an object"),
    ],
)
def test_single_problems(patch: dict[str, Any], expected: str) -> None:
    spec = {"jobTemplate": job_template(), "resources": [config_map()]} | patch
    errors = errors_of({key: value for key, value in spec.items() if value is not None})
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]


def test_spec_that_is_not_an_object() -> None:
    assert errors_of([]) == ("spec: must be an object, got array",)


def test_history_one_and_cooldown_zero_are_valid() -> None:
    spec = api.parse_spec({"jobTemplate": job_template(), "resources": [config_map()], "history": 1, "cooldown": "0s"})
    assert (spec.history, spec.cooldown) == (1, datetime.timedelta(0))


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", ["a", "my-first-trigger", "a.b-c", "x" * 63, "0abc"])
def test_valid_ctj_names(name: str) -> None:
    assert api.name_errors(name) == ()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 64, "at most 63 characters"),
        ("My-Trigger", "lower case alphanumeric"),
        ("-a", "start and end"),
        ("a_b", "lower case alphanumeric"),
    ],
)
def test_invalid_ctj_names(name: str, problem: str) -> None:
    assert any(problem in message for message in api.name_errors(name))


# ---------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", seconds(seconds=30)),
        ("15m", seconds(minutes=15)),
        ("1h", seconds(hours=1)),
        ("1h30m", seconds(hours=1, minutes=30)),
        ("1h30m0s", seconds(hours=1, minutes=30)),
        ("3600s", seconds(hours=1)),
        ("1.5h", seconds(minutes=90)),
        ("500ms", seconds(milliseconds=500)),
        ("0", seconds(0)),
        ("0s", seconds(0)),
        ("2h45m30.5s", seconds(hours=2, minutes=45, seconds=30.5)),
        ("1m1m", seconds(minutes=2)),
        (".5s", seconds(milliseconds=500)),
        ("1.s", seconds(seconds=1)),
        ("1us", seconds(microseconds=1)),
        ("1µs", seconds(microseconds=1)),
        ("1μs", seconds(microseconds=1)),
        ("1500ns", seconds(microseconds=1)),
        ("999ns", seconds(0)),
        ("0.000001s", seconds(microseconds=1)),
        ("2562047h", seconds(hours=2562047)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert api.parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5s", "must not be negative"),
        ("-0s", "must not be negative"),
        ("", "expected a Go duration"),
        ("5", "expected a Go duration"),
        ("s", "expected a Go duration"),
        ("5d", "expected a Go duration"),
        ("1.2.3s", "expected a Go duration"),
        ("+5s", "expected a Go duration"),
        ("1h-5m", "expected a Go duration"),
        ("5 s", "expected a Go duration"),
        (" 5s", "expected a Go duration"),
        ("5S", "expected a Go duration"),
        ("00", "expected a Go duration"),
        (".s", "expected a Go duration"),
        ("2562048h", "out of range"),
        ("9999999999999999999999s", "out of range"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        api.parse_duration(text)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        api.parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (seconds(0), "0s"),
        (seconds(seconds=30), "30s"),
        (seconds(minutes=1), "1m0s"),
        (seconds(minutes=90), "1h30m0s"),
        (seconds(hours=1, seconds=1), "1h0m1s"),
        (seconds(seconds=1.5), "1.5s"),
        (seconds(milliseconds=500), "500ms"),
        (seconds(microseconds=1500), "1.5ms"),
        (seconds(microseconds=7), "7µs"),
        (seconds(days=2), "48h0m0s"),
        (seconds(seconds=-90), "-1m30s"),
        (seconds(minutes=1, microseconds=10), "1m0.00001s"),
    ],
)
def test_format_duration_like_go(value: datetime.timedelta, text: str) -> None:
    assert api.format_duration(value) == text


@RELAXED
@given(st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=100_000)))
def test_format_then_parse_round_trips(value: datetime.timedelta) -> None:
    assert api.parse_duration(api.format_duration(value)) == value


@RELAXED
@given(st.text(alphabet="0123456789.hmsunµ-+ ", max_size=8))
def test_pattern_and_parser_agree(text: str) -> None:
    matches = re.fullmatch(api.DURATION_PATTERN, text) is not None
    try:
        api.parse_duration(text)
    except ValueError as error:
        accepted, problem = False, str(error)
    else:
        accepted, problem = True, ""
    assert accepted == matches or "out of range" in problem


def test_duration_pattern_is_anchored_and_re2_friendly() -> None:
    pattern = api.DURATION_PATTERN
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    for construct in ("(?=", "(?!", "(?<", "\\d", "\\b"):
        assert construct not in pattern
