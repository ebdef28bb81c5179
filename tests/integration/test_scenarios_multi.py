"""Several watched resources: the guide's multi-resource shapes (ConfigMap + Secret), Any and All.

Secrets get keyed hashes: what status publishes must not let anyone confirm a guessed Secret value
with a plain hash, and no Secret value may leak into the CTJ, its Events, its Jobs or the logs.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess

from changejob.domain import fields, hashing

pytestmark = pytest.mark.integration

HASH_KEY_SECRET = "kube-changejob-hash-key"
OLD_SECRET = "s3cr3t-Pa55word-ORIGINAL"
NEW_SECRET = "n3w-S3cr3t-Pa55word-ROTATED"


def app_resources(ns: str) -> list[dict[str, Any]]:
    """The guide's "multi-resource-any"/"multi-resource-all" resources, in the test namespace."""
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "app-config", "namespace": ns},
        {"apiVersion": "v1", "kind": "Secret", "name": "app-secret", "namespace": ns},
    ]


def create_app_objects(kube: Kube) -> None:
    kube.run("create", "configmap", "app-config", "-n", kube.ns, "--from-literal=mode=blue")
    kube.run("create", "secret", "generic", "app-secret", "-n", kube.ns, f"--from-literal=password={OLD_SECRET}")


def set_secret(kube: Kube, value: str) -> None:
    kube.patch("secret", "app-secret", {"stringData": {"password": value}})


def entries(kube: Kube, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = kube.ctj(name)["status"]["resourceHashes"]
    return found


def at_rest(kube: Kube, name: str, triggers: int) -> bool:
    """The CTJ has fired ``triggers`` times and every resource is back at its reference."""
    status = kube.ctj(name).get("status") or {}
    found = status.get("resourceHashes") or []
    return (
        status.get("triggerCount") == triggers
        and bool(found)
        and all(e["changed"] is False and e["hash"] == e["lastTriggeredHash"] for e in found)
    )


def leaked(text: str, values: tuple[str, ...]) -> list[str]:
    """Which of ``values`` (or their base64 forms, as a Secret's data holds them) appear in ``text``."""
    forms = {v: (v, base64.b64encode(v.encode()).decode()) for v in values}
    return [v for v, variants in forms.items() if any(f in text for f in variants)]


def test_secret_hashes_are_keyed_and_values_never_leak(kube: Kube, operator: OperatorProcess) -> None:
    create_app_objects(kube)
    kube.apply(ctj_body("multi-resource-any", app_resources(kube.ns), condition_="Any", cooldown="0s"))
    wait_until(baseline_recorded(kube, "multi-resource-any"), what="baseline")
    config_entry, secret_entry = entries(kube, "multi-resource-any")
    whole = fields.compile_path("*").extract

    # Control: a ConfigMap field's status hash is the plain xxh3-128 of the canonical value, so the
    # same computation on the Secret is a meaningful comparison.
    config = kube.get("configmap", "app-config")
    assert config is not None
    assert config_entry["fields"] == [
        {"field": "*", "hash": hashing.digest(whole(config)), "lastTriggeredHash": hashing.digest(whole(config))}
    ]

    secret = kube.get("secret", "app-secret")
    assert secret is not None
    published = secret_entry["fields"][0]["hash"]
    assert secret_entry["fields"][0]["field"] == "*"
    assert published != hashing.digest(whole(secret)), "Secret hash is the unkeyed xxh3-128 of its value"
    for value in ({"password": OLD_SECRET}, secret["data"], OLD_SECRET):
        assert published != hashing.digest(value)
    # It is the keyed BLAKE2b-128 with the installation's key (kept in the operator's namespace).
    key_secret = kube.get("secret", HASH_KEY_SECRET)
    assert key_secret is not None, "the operator did not create its hash-key Secret"
    key = base64.b64decode(key_secret["data"]["key"])
    assert published == hashing.digest(whole(secret), key=key)

    # A single key is where a guess is easiest: its published hash must not confirm the value either.
    single = [{**app_resources(kube.ns)[1], "fields": ["data.password"]}]
    kube.apply(ctj_body("password-watcher", single, cooldown="0s"))
    wait_until(baseline_recorded(kube, "password-watcher"), what="baseline of the single key")
    key_hash = entries(kube, "password-watcher")[0]["fields"][0]["hash"]
    for value in (secret["data"]["password"], OLD_SECRET):
        assert key_hash != hashing.digest(value)
    assert key_hash == hashing.digest(secret["data"]["password"], key=key)

    set_secret(kube, NEW_SECRET)
    jobs = wait_until(lambda: kube.jobs("multi-resource-any"), what="the Job for the Secret change")
    wait_until(lambda: at_rest(kube, "multi-resource-any", 1), what="status after the trigger")
    assert len(kube.jobs("multi-resource-any")) == 1
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/changed"] == f"Secret/{kube.ns}/app-secret:*"

    secret = kube.get("secret", "app-secret")
    assert secret is not None
    assert entries(kube, "multi-resource-any")[1]["hash"] == hashing.combine([hashing.digest(whole(secret), key=key)])

    documents = {
        "CTJ": json.dumps(kube.ctj("multi-resource-any")),
        "Events": kube.run("get", "events", "-n", kube.ns, "-o", "json").stdout,
        "Job": json.dumps(kube.jobs("multi-resource-any")),
        "other CTJ": json.dumps(kube.ctj("password-watcher")),
        "Job pods": kube.run(
            "get", "pods", "-n", kube.ns, "-l", f"job-name={jobs[0]['metadata']['name']}", "-o", "json"
        ).stdout,
        "operator log": operator.logs(),
    }
    assert "app-secret" in documents["Events"]  # the Events do talk about the Secret, by name
    for where, text in documents.items():
        assert leaked(text, (OLD_SECRET, NEW_SECRET)) == [], f"a Secret value leaked into the {where}"


def test_any_condition_triggers_on_either_resource(kube: Kube, operator: OperatorProcess) -> None:
    create_app_objects(kube)
    kube.apply(ctj_body("multi-resource-any", app_resources(kube.ns), condition_="Any", cooldown="0s"))
    wait_until(baseline_recorded(kube, "multi-resource-any"), what="baseline")

    kube.patch("configmap", "app-config", {"data": {"mode": "green"}})
    wait_until(lambda: len(kube.jobs("multi-resource-any")) == 1, what="Job for the ConfigMap change")
    wait_until(lambda: at_rest(kube, "multi-resource-any", 1), what="status after trigger 1")

    set_secret(kube, NEW_SECRET)
    wait_until(lambda: len(kube.jobs("multi-resource-any")) == 2, what="Job for the Secret change")
    wait_until(lambda: at_rest(kube, "multi-resource-any", 2), what="status after trigger 2")
    jobs = kube.jobs("multi-resource-any")
    assert len(jobs) == 2
    changed = [j["metadata"]["annotations"]["changejob.dev/changed"] for j in jobs]
    assert changed == [f"ConfigMap/{kube.ns}/app-config:*", f"Secret/{kube.ns}/app-secret:*"]


def test_all_condition_waits_for_every_resource(kube: Kube, operator: OperatorProcess) -> None:
    create_app_objects(kube)
    kube.apply(ctj_body("multi-resource-all", app_resources(kube.ns), condition_="All", cooldown="0s"))
    wait_until(baseline_recorded(kube, "multi-resource-all"), what="baseline")
    baseline = entries(kube, "multi-resource-all")

    kube.patch("configmap", "app-config", {"data": {"mode": "green"}})

    def config_change_seen() -> list[dict[str, Any]] | None:
        found = entries(kube, "multi-resource-all")
        return found if found[0]["hash"] != baseline[0]["hash"] else None

    seen = wait_until(config_change_seen, what="status showing the ConfigMap change")
    assert seen is not None
    config_entry, secret_entry = seen
    assert config_entry["changed"] is True and config_entry["lastTriggeredHash"] == baseline[0]["hash"]
    assert secret_entry["changed"] is False and secret_entry["hash"] == baseline[1]["hash"]
    status = kube.ctj("multi-resource-all")["status"]
    assert status["triggerCount"] == 0 and "lastJobName" not in status
    assert kube.jobs("multi-resource-all") == []  # the status write comes after the decision

    set_secret(kube, NEW_SECRET)
    jobs = wait_until(lambda: kube.jobs("multi-resource-all"), what="the Job once both changed")
    wait_until(lambda: at_rest(kube, "multi-resource-all", 1), what="both back at their reference")
    assert len(kube.jobs("multi-resource-all")) == 1
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/trigger"] == "1"
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/changed"] == (
        f"ConfigMap/{kube.ns}/app-config:*,Secret/{kube.ns}/app-secret:*"
    )
    assert [e["changed"] for e in entries(kube, "multi-resource-all")] == [False, False]

    # One more change of one resource alone is again not enough.
    kube.patch("configmap", "app-config", {"data": {"mode": "red"}})
    wait_until(lambda: entries(kube, "multi-resource-all")[0]["changed"] is True, what="second ConfigMap change")
    assert len(kube.jobs("multi-resource-all")) == 1
