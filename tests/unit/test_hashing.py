"""Canonical bytes, digests and the per-object hasher."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changejob.domain import fields, hashing

pytestmark = pytest.mark.unit

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web-app",
            "namespace": "default",
            "uid": "9f6f1e4c-8a7b-4c1d-9e2f-0a1b2c3d4e5f",
            "resourceVersion": "100",
            "generation": 4,
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": {"app": "web"},
            "managedFields": [{"manager": "kube-controller-manager", "subresource": "status"}],
        },
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}},
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "readyReplicas": 2,
            "conditions": [{"type": "Available", "status": "False", "lastUpdateTime": "2024-05-01T12:00:00Z"}],
        },
    }


def secret(password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "app-secret", "namespace": "default", "resourceVersion": "7"},
        "type": "Opaque",
        "data": {"password": password},
    }


# ---------------------------------------------------------------------------------------------
# canonical / digest / combine


def test_canonical_sorts_keys_at_every_level() -> None:
    assert hashing.canonical({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": None}}) == (
        b'{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}'
    )


def test_canonical_matches_sorted_json() -> None:
    value = {"k": ["x", 1, 2.5, True, None], "é": "ünï"}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashing.canonical(value) == expected


def test_absent_null_and_empty_hash_differently() -> None:
    values = [fields.ABSENT, None, [], {}, "", 0, False, "absent"]
    encodings = [hashing.canonical(v) for v in values]
    assert hashing.canonical(fields.ABSENT) == b"\x00absent"
    assert len(set(encodings)) == len(values)
    digests = [hashing.digest(v) for v in values]
    assert len(set(digests)) == len(values)
    assert hashing.digest(fields.ABSENT) == "absent"
    assert hashing.digest(fields.ABSENT, key=KEY) == "absent"


def test_plain_digest_is_xxh3_128_of_the_canonical_bytes() -> None:
    value = {"data": {"key": "value"}}
    assert hashing.digest(value) == xxhash.xxh3_128_hexdigest(b'{"data":{"key":"value"}}')
    assert len(hashing.digest(value)) == 32


def test_keyed_digest_is_blake2b_128_and_depends_on_the_key() -> None:
    value = {"password": "aHVudGVyMg=="}
    keyed = hashing.digest(value, key=KEY)
    assert keyed == hashlib.blake2b(hashing.canonical(value), digest_size=16, key=KEY).hexdigest()
    assert len(keyed) == 32
    assert keyed != hashing.digest(value)
    assert keyed != hashing.digest(value, key=OTHER_KEY)
    assert keyed == hashing.digest(copy.deepcopy(value), key=KEY)


def test_combine_joins_with_newlines_in_order() -> None:
    parts = ["a" * 32, "b" * 32, "absent"]
    assert hashing.combine(parts) == xxhash.xxh3_128_hexdigest("\n".join(parts).encode())
    assert hashing.combine(parts) != hashing.combine(list(reversed(parts)))
    assert hashing.combine(["ab", "c"]) != hashing.combine(["a", "bc"])


# ---------------------------------------------------------------------------------------------
# ObjectHasher


def test_hasher_reports_fields_in_spec_order_and_combines_them() -> None:
    obj = deployment()
    specs = ["spec.template.spec.containers[*].image", "spec.replicas", "metadata.labels"]
    pairs, combined = hashing.ObjectHasher(fields=specs).hash(obj)
    assert [name for name, _ in pairs] == specs
    assert pairs[0][1] == hashing.digest(["nginx:1.25"])
    assert pairs[1][1] == hashing.digest(3)
    assert pairs[2][1] == hashing.digest({"app": "web"})
    assert combined == hashing.combine([digest for _, digest in pairs])


def test_single_field_hasher_combines_too() -> None:
    pairs, combined = hashing.ObjectHasher(fields=["data"]).hash({"data": {"a": "1"}})
    assert pairs == (("data", hashing.digest({"a": "1"})),)
    assert combined == hashing.combine([pairs[0][1]])


def test_missing_field_hashes_as_absent() -> None:
    pairs, combined = hashing.ObjectHasher(fields=["data.nope", "data"]).hash({"data": {}})
    assert pairs[0] == ("data.nope", "absent")
    assert combined == hashing.combine(["absent", hashing.digest({})])


def test_default_whole_object_ignores_status_and_volatile_metadata() -> None:
    hasher = hashing.ObjectHasher(fields=["*"])
    before = deployment()
    churned = deployment()
    churned["status"]["readyReplicas"] = 3
    churned["status"]["conditions"][0]["status"] = "True"
    churned["metadata"]["resourceVersion"] = "101"
    churned["metadata"]["generation"] = 5
    churned["metadata"]["managedFields"].append({"manager": "kubectl"})
    assert hasher.hash(churned) == hasher.hash(before)
    del churned["status"]
    assert hasher.hash(churned) == hasher.hash(before)


def test_whole_object_sees_spec_labels_and_annotations() -> None:
    hasher = hashing.ObjectHasher(fields=["*"])
    base = hasher.hash(deployment())[1]
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda o: o["spec"].update(replicas=4),
        lambda o: o["metadata"]["labels"].update(tier="front"),
        lambda o: o["metadata"].update(annotations={"note": "x"}),
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="nginx:1.26"),
    ]
    for change in changes:
        obj = deployment()
        change(obj)
        assert hasher.hash(obj)[1] != base


def test_whole_object_hash_equals_digest_of_without_volatile() -> None:
    obj = deployment()
    pairs, _ = hashing.ObjectHasher(fields=["*"]).hash(obj)
    assert pairs == (("*", hashing.digest(fields.without_volatile(obj))),)


def test_list_item_and_watch_event_of_the_same_object_hash_alike() -> None:
    watched = deployment()
    listed = {k: v for k, v in deployment().items() if k not in ("apiVersion", "kind")}
    hasher = hashing.ObjectHasher(fields=["*"])
    assert hasher.hash(listed) == hasher.hash(watched)


def test_field_selection_ignores_other_changes() -> None:
    hasher = hashing.ObjectHasher(fields=["spec.template.spec.containers[*].image"])
    obj = deployment()
    scaled = deployment()
    scaled["spec"]["replicas"] = 10
    assert hasher.hash(scaled) == hasher.hash(obj)
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert hasher.hash(scaled) != hasher.hash(obj)


def test_secret_hash_is_keyed_and_depends_on_the_key() -> None:
    obj = secret("aHVudGVyMg==")
    plain = hashing.ObjectHasher(fields=["data"]).hash(obj)
    keyed = hashing.ObjectHasher(fields=["data"], key=KEY).hash(obj)
    other = hashing.ObjectHasher(fields=["data"], key=OTHER_KEY).hash(obj)
    assert keyed[0][0][1] == hashing.digest(obj["data"], key=KEY)
    assert keyed != plain
    assert keyed != other
    assert keyed == hashing.ObjectHasher(fields=["data"], key=KEY).hash(copy.deepcopy(obj))
    changed = hashing.ObjectHasher(fields=["data"], key=KEY).hash(secret("c2VjcmV0"))
    assert changed != keyed


def test_keyed_whole_object_hash() -> None:
    obj = secret("aHVudGVyMg==")
    pairs, _ = hashing.ObjectHasher(fields=["*"], key=KEY).hash(obj)
    assert pairs[0][1] == hashing.digest(fields.without_volatile(obj), key=KEY)


def test_hasher_describes_itself_and_does_not_modify_the_object() -> None:
    hasher = hashing.ObjectHasher(fields=("*", "status"), key=KEY)
    assert hasher.fields == ("*", "status")
    assert hasher.keyed
    assert "keyed=True" in repr(hasher)
    assert repr(KEY) not in repr(hasher)
    obj = deployment()
    hasher.hash(obj)
    assert obj == deployment()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"fields": []}, ValueError),
        ({"fields": "data"}, TypeError),
        ({"fields": ["data["]}, fields.InvalidFieldPath),
        ({"fields": ["data"], "key": b""}, ValueError),
        ({"fields": ["data"], "key": b"k" * 65}, ValueError),
    ],
)
def test_hasher_rejects_bad_configuration(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        hashing.ObjectHasher(**kwargs)


def test_hasher_for_shares_one_hasher_per_fields_and_key() -> None:
    one = hashing.hasher_for(fields=("data",), key=None)
    assert hashing.hasher_for(fields=("data",), key=None) is one
    assert hashing.hasher_for(fields=("data",), key=KEY) is not one
    assert hashing.hasher_for(fields=("data",), key=KEY).keyed


# ---------------------------------------------------------------------------------------------
# Properties

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)


def _reorder(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reorder(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(item) for item in value]
    return value


@RELAXED
@given(value=JSON)
def test_digest_ignores_key_order(value: Any) -> None:
    assert hashing.canonical(_reorder(value)) == hashing.canonical(value)
    assert hashing.digest(_reorder(value)) == hashing.digest(value)
    assert hashing.digest(_reorder(value), key=KEY) == hashing.digest(value, key=KEY)


@RELAXED
@given(value=JSON)
def test_canonical_is_json_that_round_trips(value: Any) -> None:
    assert json.loads(hashing.canonical(value)) == value


@RELAXED
@given(a=JSON, b=JSON)
def test_different_values_get_different_digests(a: Any, b: Any) -> None:
    if hashing.canonical(a) != hashing.canonical(b):
        assert hashing.digest(a) != hashing.digest(b)
        assert hashing.digest(a, key=KEY) != hashing.digest(b, key=KEY)


@RELAXED
@given(
    obj=st.dictionaries(st.sampled_from(["data", "spec", "status", "metadata"]), JSON, max_size=4),
    specs=st.lists(st.sampled_from(["*", "data", "spec.a", "spec[*]", "..a", "status"]), min_size=1, max_size=4),
)
def test_hasher_agrees_with_digest_of_each_extracted_field(obj: dict[str, Any], specs: list[str]) -> None:
    pairs, combined = hashing.ObjectHasher(fields=specs).hash(obj)
    expected = [(spec, hashing.digest(fields.compile_path(spec).extract(obj))) for spec in specs]
    assert list(pairs) == expected
    assert combined == hashing.combine([d for _, d in expected])
