"""Field paths: kubectl's JSONPath dialect, compiled once, evaluated against plain JSON objects."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import fields

pytestmark = pytest.mark.unit

ABSENT = fields.ABSENT

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web-app",
        "namespace": "default",
        "uid": "0b7d3c1e-5c0e-4d0e-9a43-7d4c3b2a1f00",
        "resourceVersion": "4711",
        "generation": 7,
        "creationTimestamp": "2024-05-01T12:00:00Z",
        "labels": {"app": "web"},
        "annotations": {"example.com/owner": "team-a", "deployment.kubernetes.io/revision": "3"},
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    },
    "spec": {
        "replicas": 3,
        "template": {
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1.25", "resources": {"limits": {"cpu": "500m"}}},
                    {"name": "sidecar", "image": "busybox:1.36", "ready": False},
                ],
                "initContainers": [{"name": "init", "image": "alpine:3.20"}],
            }
        },
    },
    "status": {
        "replicas": 3,
        "conditions": [
            {"type": "Available", "status": "True", "count": 2},
            {"type": "Ready", "status": "False", "count": 1},
            {"type": "Progressing", "status": "True", "count": 10},
        ],
    },
}

CONFIG_MAP: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "app-config", "namespace": "default"},
    "data": {"key": "value", "app.properties": "a=1", "important-key": "x", "empty": ""},
}


def extract(expr: str, obj: dict[str, Any]) -> Any:
    return fields.compile_path(expr).extract(obj)


# ---------------------------------------------------------------------------------------------
# The paths the user guide and the API reference use


@pytest.mark.parametrize(
    ("expr", "obj", "expected"),
    [
        ("data", CONFIG_MAP, CONFIG_MAP["data"]),
        ("data.key", CONFIG_MAP, "value"),
        ("data.important-key", CONFIG_MAP, "x"),
        ("data['app.properties']", CONFIG_MAP, "a=1"),
        ('data["app.properties"]', CONFIG_MAP, "a=1"),
        ("spec.replicas", DEPLOYMENT, 3),
        ("spec.template.spec.containers[*].image", DEPLOYMENT, ["nginx:1.25", "busybox:1.36"]),
        (
            "spec.template.spec.containers[*].resources",
            DEPLOYMENT,
            [{"limits": {"cpu": "500m"}}],
        ),
        ('status.conditions[?(@.type=="Ready")].status', DEPLOYMENT, ["False"]),
    ],
)
def test_guide_paths(expr: str, obj: dict[str, Any], expected: Any) -> None:
    assert extract(expr, obj) == expected


@pytest.mark.parametrize(
    "expr",
    ["data.key", ".data.key", "{.data.key}", "{data.key}", "$.data.key", "{$.data.key}", "  data.key  "],
)
def test_equivalent_spellings(expr: str) -> None:
    assert extract(expr, CONFIG_MAP) == "value"


def test_escaped_dot_in_a_name() -> None:
    assert extract(r"metadata.annotations.example\.com/owner", DEPLOYMENT) == "team-a"
    assert extract("metadata.annotations['example.com/owner']", DEPLOYMENT) == "team-a"


def test_escaped_star_is_a_literal_key() -> None:
    assert extract(r"data.\*", {"data": {"*": 1, "a": 2}}) == 1


# ---------------------------------------------------------------------------------------------
# Indexes, slices, unions, wildcards


ITEMS = {"items": [10, 20, 30, 40]}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("items[0]", 10),
        ("items[3]", 40),
        ("items[-1]", 40),
        ("items[-4]", 10),
        ("items[ 1 ]", 20),
        ("items[4]", ABSENT),
        ("items[-5]", ABSENT),
        ("items[1:3]", [20, 30]),
        ("items[:2]", [10, 20]),
        ("items[2:]", [30, 40]),
        ("items[::2]", [10, 30]),
        ("items[::-1]", [40, 30, 20, 10]),
        ("items[5:9]", ABSENT),
        ("items[0,2]", [10, 30]),
        ("items[*]", [10, 20, 30, 40]),
        ("items.*", [10, 20, 30, 40]),
    ],
)
def test_list_selectors(expr: str, expected: Any) -> None:
    assert extract(expr, ITEMS) == expected


def test_wildcard_on_a_map_gives_values_in_key_order() -> None:
    one = {"data": {"b": 2, "a": 1, "c": 3}}
    other = {"data": {"c": 3, "a": 1, "b": 2}}
    assert extract("data[*]", one) == [1, 2, 3]
    assert extract("data.*", other) == [1, 2, 3]


def test_union_of_quoted_keys_keeps_the_written_order() -> None:
    assert extract("data['key', 'app.properties']", CONFIG_MAP) == ["value", "a=1"]
    assert extract("data['missing', 'key']", CONFIG_MAP) == ["value"]


def test_wildcard_then_names() -> None:
    assert extract("spec.template.spec.containers[*].name", DEPLOYMENT) == ["web", "sidecar"]
    assert extract("spec.template.spec.containers[*].resources.limits.cpu", DEPLOYMENT) == ["500m"]
    assert extract("spec.template.spec.containers[1].image", DEPLOYMENT) == "busybox:1.36"


def test_wildcard_result_is_a_new_list() -> None:
    obj = {"items": [1, 2]}
    found = extract("items[*]", obj)
    found.append(3)
    assert obj == {"items": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Filters


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('status.conditions[?(@.type=="Ready")].status', ["False"]),
        ("status.conditions[?(@.type=='Ready')].status", ["False"]),
        ('status.conditions[?(@.type != "Ready")].type', ["Available", "Progressing"]),
        ("status.conditions[?(@.count>1)].type", ["Available", "Progressing"]),
        ("status.conditions[?(@.count>=2)].type", ["Available", "Progressing"]),
        ("status.conditions[?(@.count<2)].type", ["Ready"]),
        ("status.conditions[?(@.count<=2)].type", ["Available", "Ready"]),
        ("status.conditions[?(@.count==10)].type", ["Progressing"]),
        ("status.conditions[?(@.count==1.0)].type", ["Ready"]),
        ('status.conditions[?(@.type=="Nope")].status', ABSENT),
        ("spec.template.spec.containers[?(@.ready)].name", ["sidecar"]),
        ("spec.template.spec.containers[?(@.resources.limits)].name", ["web"]),
        ('spec.template.spec.containers[?(@["name"]=="web")].image', ["nginx:1.25"]),
        ("spec.template.spec.containers[?(@.ready==false)].name", ["sidecar"]),
    ],
)
def test_filters(expr: str, expected: Any) -> None:
    assert extract(expr, DEPLOYMENT) == expected


def test_filter_compares_json_types_strictly() -> None:
    obj = {"items": [{"v": 1}, {"v": "1"}, {"v": True}, {"v": None}, {"v": 1.0}]}
    assert extract("items[?(@.v==1)]", obj) == [{"v": 1}, {"v": 1.0}]
    assert extract('items[?(@.v=="1")]', obj) == [{"v": "1"}]
    assert extract("items[?(@.v==true)]", obj) == [{"v": True}]
    assert extract("items[?(@.v==null)]", obj) == [{"v": None}]
    assert extract("items[?(@.v>0)]", obj) == [{"v": 1}, {"v": 1.0}]


def test_filter_string_ordering_and_mismatched_types() -> None:
    obj = {"items": [{"v": "b"}, {"v": "a"}, {"v": 3}]}
    assert extract('items[?(@.v>"a")]', obj) == [{"v": "b"}]
    assert extract("items[?(@.v!=3)]", obj) == [{"v": "b"}, {"v": "a"}]


def test_filter_comparing_two_fields_of_the_element() -> None:
    obj = {"items": [{"a": 1, "b": 1}, {"a": 1, "b": 2}]}
    assert extract("items[?(@.a==@.b)]", obj) == [{"a": 1, "b": 1}]


def test_filter_on_the_element_itself() -> None:
    assert extract("items[?(@>20)]", ITEMS) == [30, 40]


def test_filter_over_a_map_filters_its_values() -> None:
    obj = {"m": {"x": {"on": True}, "y": {"on": False}, "z": {}}}
    assert extract("m[?(@.on==true)]", obj) == [{"on": True}]


def test_exists_filter_matches_present_false_and_null() -> None:
    obj = {"items": [{"ready": False}, {"ready": None}, {}]}
    assert extract("items[?(@.ready)]", obj) == [{"ready": False}, {"ready": None}]


# ---------------------------------------------------------------------------------------------
# Recursive descent


def test_recursive_descent_finds_every_depth() -> None:
    assert extract("..image", DEPLOYMENT) == ["nginx:1.25", "busybox:1.36", "alpine:3.20"]


def test_recursive_descent_after_a_name_and_with_brackets() -> None:
    assert extract("spec..name", DEPLOYMENT) == ["web", "sidecar", "init"]
    assert extract("spec..containers[0].name", DEPLOYMENT) == ["web"]
    assert extract("..['app.properties']", CONFIG_MAP) == ["a=1"]


def test_recursive_descent_nothing_found() -> None:
    assert extract("..nothing", DEPLOYMENT) is ABSENT


# ---------------------------------------------------------------------------------------------
# Absent, null and empty are three different things


def test_absent_null_and_empty_are_distinguished() -> None:
    obj: dict[str, Any] = {"a": None, "b": [], "c": {}, "d": ""}
    assert extract("a", obj) is None
    assert extract("b", obj) == []
    assert extract("c", obj) == {}
    assert extract("d", obj) == ""
    assert extract("missing", obj) is ABSENT
    # a multi-match that matches nothing is ABSENT, not an empty list
    assert extract("b[*]", obj) is ABSENT
    assert extract("c[*]", obj) is ABSENT
    assert extract("missing[*]", obj) is ABSENT


@pytest.mark.parametrize(
    ("expr", "obj"),
    [
        ("data.key.deeper", CONFIG_MAP),  # name on a string
        ("data.key[0]", CONFIG_MAP),  # index on a string must not give its first character
        ("data[0]", CONFIG_MAP),  # index on a map
        ("items.first", ITEMS),  # name on a list
        ("spec.replicas.x", DEPLOYMENT),  # name on a number
        ("a.b", {"a": None}),  # name on null
        ("a[0]", {"a": None}),
    ],
)
def test_type_mismatches_are_absent(expr: str, obj: dict[str, Any]) -> None:
    assert extract(expr, obj) is ABSENT


def test_absent_is_a_singleton_that_survives_copies() -> None:
    assert repr(ABSENT) == "absent"
    assert copy.copy(ABSENT) is ABSENT
    assert copy.deepcopy({"x": ABSENT})["x"] is ABSENT
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT
    assert type(ABSENT)() is ABSENT


# ---------------------------------------------------------------------------------------------
# Shapes and caching


@pytest.mark.parametrize(
    ("expr", "multi"),
    [
        ("data", False),
        ("data.key", False),
        ("items[0]", False),
        ("data['a.b']", False),
        ("items[*]", True),
        ("items[1:2]", True),
        ("items[0,1]", True),
        ("items[?(@.a)]", True),
        ("..a", True),
        ("data.*", True),
        ("*", False),
    ],
)
def test_multi_flag(expr: str, multi: bool) -> None:
    assert fields.compile_path(expr).multi is multi


def test_compile_is_cached_and_paths_compare_by_source() -> None:
    assert fields.compile_path("data.key") is fields.compile_path("data.key")
    assert fields.compile_path("data.key") == fields.FieldPath("data.key", lambda _: None, multi=False)
    assert fields.compile_path("data.key").source == "data.key"
    assert repr(fields.compile_path("data")) == "FieldPath('data')"


# ---------------------------------------------------------------------------------------------
# The whole object


def test_whole_object_path_is_without_volatile() -> None:
    path = fields.compile_path(fields.WHOLE_OBJECT)
    assert path.extract is fields.without_volatile
    assert fields.compile_path("{*}").extract is fields.without_volatile


def test_without_volatile_drops_status_and_volatile_metadata_only() -> None:
    before = copy.deepcopy(DEPLOYMENT)
    result = fields.without_volatile(DEPLOYMENT)
    assert before == DEPLOYMENT, "the input must not be modified"
    assert set(result) == {"metadata", "spec"}
    assert result["spec"] == DEPLOYMENT["spec"]
    assert result["metadata"] == {
        "name": "web-app",
        "namespace": "default",
        "labels": {"app": "web"},
        "annotations": {
            k: v for k, v in DEPLOYMENT["metadata"]["annotations"].items() if k not in fields.VOLATILE_ANNOTATIONS
        },
    }
    assert result["metadata"]["annotations"], "ordinary annotations stay"


def test_without_volatile_drops_exactly_the_documented_keys() -> None:
    metadata = dict.fromkeys(fields.VOLATILE_METADATA, 1) | {"name": "x", "finalizers": ["f"]}
    obj = dict.fromkeys(fields.DROPPED_TOP_LEVEL, 1) | {"metadata": metadata, "data": {}}
    documented = {
        "resourceVersion",
        "managedFields",
        "generation",
        "uid",
        "creationTimestamp",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
    assert documented == fields.VOLATILE_METADATA
    assert fields.without_volatile(obj) == {"metadata": {"name": "x", "finalizers": ["f"]}, "data": {}}


def test_without_volatile_of_list_item_and_watch_event_shapes_agree() -> None:
    # The API server leaves apiVersion/kind out of list items but sends them in watch events.
    listed = {key: value for key, value in DEPLOYMENT.items() if key not in ("apiVersion", "kind")}
    assert fields.without_volatile(listed) == fields.without_volatile(DEPLOYMENT)


def test_without_volatile_without_metadata() -> None:
    assert fields.without_volatile({"data": {"a": "b"}, "status": {}}) == {"data": {"a": "b"}}


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("expr", "reason", "position"),
    [
        ("data[", "unbalanced bracket", 4),
        ("data]", "unbalanced bracket", 4),
        ("data[0]]", "unbalanced bracket", 7),
        ("a.b[?(@.x==1)", "unbalanced bracket", 3),
        ("", "empty path", None),
        ("   ", "empty path", None),
        ("{}", "empty path", None),
        (".", "empty path", None),
        ("a.", "empty segment", 1),
        ("a..b.", "empty segment", 4),
        ("a.[0]", "empty segment", 1),
        ("a...b", "too many dots", 1),
        ("data..", "recursive descent", 4),
        ("[]", "empty brackets", 0),
        ("a[ ]", "empty brackets", 1),
        ("a[0,]", "empty selector", 4),
        ("a[abc]", "invalid index 'abc'", 2),
        ("a[1:2:0]", "slice step must not be zero", 2),
        ("a[1:2:3:4]", "invalid slice", 2),
        ("a[1:x]", "invalid slice bound", 2),
        ("a[0,1:2]", "slice cannot be part of a union", 1),
        ("a['x]", "unterminated string", 1),
        ("a b", "unexpected character ' '", 1),
        ("a*", "'*' must be a whole segment", 0),
        ("{data", "unbalanced brace", 0),
        ("data}", "unbalanced brace", 4),
        ("a[(@.length-1)]", "script expressions are not supported", 2),
        ("a[?@.x]", "a filter must look like", 2),
        ("a[?()]", "empty filter", 2),
        ("a[?(@.x=~'y')]", "unknown operator '=~'", 7),
        ("a[?(@.x==='y')]", "unknown operator '==='", 7),
        ("a[?(@.x=1)]", "unknown operator '='", 7),
        ("a[?(@.x && @.y)]", "unknown operator '&&'", 8),
        ("a[?(@.x==)]", "missing value after operator", 9),
        ("a[?(@.x==foo)]", "invalid filter value 'foo'", 9),
        ("a[?(@.x==1 2)]", "unexpected text '2'", 11),
        ("a[?(@.x y)]", "expected an operator", 8),
        ("a\\", "dangling escape", 1),
    ],
)
def test_invalid_paths_say_what_and_where(expr: str, reason: str, position: int | None) -> None:
    with pytest.raises(fields.InvalidFieldPath) as caught:
        fields.compile_path(expr)
    error = caught.value
    assert isinstance(error, ValueError)
    assert reason in str(error)
    quoted = expr.replace("\\", "\\\\").replace('"', '\\"')
    assert str(error).startswith(f'invalid field path "{quoted}": ')
    assert error.expr == expr
    assert error.position == position
    if position is not None:
        assert str(error).endswith(f"at position {position}")


def test_invalid_field_path_message_format() -> None:
    with pytest.raises(fields.InvalidFieldPath, match=r'^invalid field path "data\[": unbalanced bracket'):
        fields.compile_path("data[")


def test_quotes_in_the_expression_are_escaped_in_the_message() -> None:
    with pytest.raises(fields.InvalidFieldPath, match=r'^invalid field path "a\[\\"x\]"'):
        fields.compile_path('a["x]')


def test_non_string_path_is_rejected() -> None:
    with pytest.raises(fields.InvalidFieldPath, match="must be a string"):
        fields.compile_path(5)


# ---------------------------------------------------------------------------------------------
# Properties

# The machine running the suite is shared: judge the properties, not the timing.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
KEYS = st.text(alphabet="abc.-_", min_size=1, max_size=3)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=15,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=5)


def _walk(obj: Any, keys: list[str | int]) -> Any:
    node = obj
    for key in keys:
        found_key = isinstance(key, str) and isinstance(node, dict) and key in node
        found_index = isinstance(key, int) and isinstance(node, list) and -len(node) <= key < len(node)
        if not (found_key or found_index):
            return ABSENT
        node = node[key]
    return node


def _spell(keys: list[str | int]) -> str:
    parts = []
    for key in keys:
        parts.append(f"[{key}]" if isinstance(key, int) else f"['{key}']")
    return "".join(parts)


@RELAXED
@given(obj=OBJECTS, keys=st.lists(KEYS | st.integers(-3, 3), min_size=1, max_size=4))
def test_simple_paths_agree_with_a_reference_walk(obj: dict[str, Any], keys: list[str | int]) -> None:
    assert fields.compile_path(_spell(keys)).extract(obj) == _walk(obj, keys)


@RELAXED
@given(obj=OBJECTS, expr=st.sampled_from(["a[*]", "..a", "*.b", "a[?(@.b)]", "a[0:2]", "..[*]", "a..b"]))
def test_multi_paths_return_a_non_empty_list_or_absent(obj: dict[str, Any], expr: str) -> None:
    before = copy.deepcopy(obj)
    found = fields.compile_path(expr).extract(obj)
    assert found is ABSENT or (isinstance(found, list) and found)
    assert obj == before


@RELAXED
@given(obj=OBJECTS)
def test_key_order_never_changes_a_result(obj: dict[str, Any]) -> None:
    reordered = _reverse_keys(obj)
    for expr in ("*", "..a", "[*]", "a.*", "..[0]"):
        path = fields.compile_path(expr)
        assert path.extract(obj) == path.extract(reordered)


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reverse_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(item) for item in value]
    return value


@RELAXED
@given(text=st.text(alphabet="ab.[]*'\"?()@=!<>0-1: {}$\\,", max_size=14))
def test_any_text_compiles_or_raises_invalid_field_path(text: str) -> None:
    try:
        path = fields.compile_path(text)
    except fields.InvalidFieldPath as error:
        reason = error.reason
    else:
        path.extract({"a": [{"b": 1}, {"a": "x"}], "b": {"a": None}})
        reason = "compiled"
    assert reason


def test_whole_object_ignores_controller_written_annotations() -> None:
    """A rollout bumps deployment.kubernetes.io/revision after the template change: no second change."""
    base = {
        "metadata": {"name": "web", "annotations": {"team": "a", "deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 1},
    }
    bumped = {
        "metadata": {"name": "web", "annotations": {"team": "a", "deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": 1},
    }
    whole = fields.compile_path("*")
    assert whole.extract(base) == whole.extract(bumped)
    assert whole.extract(base)["metadata"]["annotations"] == {"team": "a"}
    assert base["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"  # input untouched
    other = {"metadata": {"name": "web", "annotations": {"team": "b"}}, "spec": {"replicas": 1}}
    assert whole.extract(other) != whole.extract(base)
    # Selected explicitly, it is still visible.
    assert fields.compile_path("metadata.annotations").extract(bumped)["deployment.kubernetes.io/revision"] == "2"
