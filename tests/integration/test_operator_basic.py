"""The user guide's first ChangeTriggeredJob, run as written against the real operator."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ctj_helpers import (
    FIRST_TRIGGER,
    Kube,
    baseline_recorded,
    condition,
    configmaps_with_ctjs,
    ctj_body,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_first_trigger_from_the_guide(kube: Kube, operator: object) -> None:
    kube.run("create", "configmap", "my-config", "-n", kube.ns, "--from-literal=key=value")
    kube.apply(FIRST_TRIGGER.format(ns=kube.ns))
    wait_until(baseline_recorded(kube, "my-first-trigger"), what="baseline")
    ctj = kube.ctj("my-first-trigger")
    assert ctj["spec"]["cooldown"] == "60s" and ctj["spec"]["history"] == 5  # CRD defaults
    assert ctj["status"]["triggerCount"] == 0
    assert kube.jobs("my-first-trigger") == []
    assert condition(ctj, "Ready")["status"] == "True"  # type: ignore[index]

    kube.run("patch", "configmap", "my-config", "-n", kube.ns, "-p", '{"data":{"key":"newvalue"}}')
    jobs = wait_until(lambda: kube.jobs("my-first-trigger"), what="the Job")
    assert len(jobs) == 1
    job = jobs[0]
    assert job["metadata"]["labels"]["changejob.dev/owner"] == "my-first-trigger"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ChangeTriggeredJob" and owner["controller"] is True
    assert "ConfigMap/" in job["metadata"]["annotations"]["changejob.dev/changed"]

    def succeeded() -> dict[str, object] | None:
        found = kube.ctj("my-first-trigger")
        return found if found["status"].get("lastJobStatus") == "Succeeded" else None

    ctj = wait_until(succeeded, timeout=60, what="lastJobStatus Succeeded")
    status = ctj["status"]
    assert status["lastJobName"] == job["metadata"]["name"]
    assert status["lastTriggeredTime"]
    assert status["triggerCount"] == 1
    entry = status["resourceHashes"][0]
    assert entry["kind"] == "ConfigMap" and entry["changed"] is False
    assert entry["hash"] == entry["lastTriggeredHash"]

    # The guide's inspection commands work as written.
    out = kube.run("get", "changetriggeredjobs", "-n", kube.ns).stdout
    assert "my-first-trigger" in out and job["metadata"]["name"] in out
    assert "Succeeded" in kube.run("describe", "changetriggeredjob", "my-first-trigger", "-n", kube.ns).stdout
    reasons = {e["reason"] for e in kube.events("my-first-trigger")}
    assert {"BaselineRecorded", "JobCreated"} <= reasons


def test_cooldown_defers_and_coalesces(kube: Kube, operator: object) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(
        ctj_body(
            "cool", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": kube.ns}], cooldown="6s"
        )
    )
    wait_until(baseline_recorded(kube, "cool"))
    kube.patch("configmap", "cfg", {"data": {"k": "1"}})
    wait_until(lambda: len(kube.jobs("cool")) == 1, what="first job")
    for value in ("2", "3", "4"):
        kube.patch("configmap", "cfg", {"data": {"k": value}})
    deferred = wait_until(
        lambda: kube.ctj("cool")["status"].get("nextTriggerTime") and kube.ctj("cool"), what="nextTriggerTime"
    )
    progressing = condition(deferred, "Progressing")
    assert progressing is not None and progressing["reason"] == "CooldownDeferred"
    assert len(kube.jobs("cool")) == 1  # not yet: inside the cooldown
    jobs = wait_until(lambda: len(kube.jobs("cool")) == 2 and kube.jobs("cool"), timeout=20, what="the deferred job")
    assert jobs[1]["metadata"]["annotations"]["changejob.dev/trigger"] == "2"
    wait_until(lambda: "nextTriggerTime" not in kube.ctj("cool")["status"], what="deferral cleared")
    # Three changes inside the cooldown made exactly one more Job.
    assert len(kube.jobs("cool")) == 2


def test_status_only_and_unselected_changes_do_not_trigger(kube: Kube, operator: object) -> None:
    kube.run("create", "configmap", "watched", "-n", kube.ns, "--from-literal=a=1")
    kube.apply(
        ctj_body(
            "data-only",
            [{"apiVersion": "v1", "kind": "ConfigMap", "name": "watched", "namespace": kube.ns, "fields": ["data"]}],
            cooldown="0s",
        )
    )
    wait_until(baseline_recorded(kube, "data-only"))
    kube.run("annotate", "configmap", "watched", "-n", kube.ns, "note=x")
    kube.run("label", "configmap", "watched", "-n", kube.ns, "tier=y")
    kube.patch("configmap", "watched", {"data": {"a": "2"}})
    jobs = wait_until(lambda: kube.jobs("data-only"), what="job after data change")
    assert len(jobs) == 1
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/changed"].endswith(":data")


def test_many_ctjs_joining_a_running_stream_all_baseline_and_trigger(kube: Kube, operator: object) -> None:
    """CTJs created after their collection's stream synced read their objects in one batch."""
    kube.run("create", "configmap", "first", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("first", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "first", "namespace": kube.ns}]))
    wait_until(baseline_recorded(kube, "first"), what="the stream is up")
    count = 24
    # Two CTJs per object with the same fields: the second reuses the first one's hashes.
    manifest = configmaps_with_ctjs(
        kube.ns, count, config=lambda i: f"cm-{i}", ctjs=lambda i: [f"late-{i}-a", f"late-{i}-b"], cooldown="0s"
    )
    kube.run("apply", "-n", kube.ns, "-f", "-", input_=manifest)
    names = [f"late-{i}-{t}" for i in range(count) for t in ("a", "b")]

    def baselines() -> dict[str, str] | None:
        ctjs = kube.ctjs()
        found = {n: ((ctjs.get(n, {}).get("status") or {}).get("resourceHashes") or [{}])[0] for n in names}
        ok = all(e.get("lastTriggeredHash") for e in found.values())
        return {n: e["hash"] for n, e in found.items()} if ok else None

    hashes = wait_until(baselines, timeout=60, what="all baselines")
    for i in range(count):
        assert hashes[f"late-{i}-a"] == hashes[f"late-{i}-b"]
    kube.patch("configmap", "cm-7", {"data": {"k": "1"}})
    wait_until(lambda: kube.jobs("late-7-a") and kube.jobs("late-7-b"), what="jobs for cm-7")
    assert len(kube.jobs("late-7-a")) == 1
    assert len(kube.jobs("late-7-b")) == 1
    assert all(not kube.jobs(n) for n in names if not n.startswith("late-7-"))


def test_ctjs_existing_before_start_all_see_their_objects(kube: Kube, operator_factory: Any) -> None:
    """At start, CTJs subscribe while their stream's first list is running: none may miss its object."""
    count = 60
    manifest = configmaps_with_ctjs(
        kube.ns, count, config=lambda i: f"pre-{i}", ctjs=lambda i: [f"pre-{i}"], cooldown="0s"
    )
    kube.run("apply", "-n", kube.ns, "-f", "-", input_=manifest)
    operator_factory()

    def states() -> dict[str, str] | None:
        ctjs = kube.ctjs()
        found = {n: ((c.get("status") or {}).get("resourceHashes") or [{}])[0] for n, c in ctjs.items()}
        if len(found) < count or not all(e.get("state") for e in found.values()):
            return None
        return {n: e["state"] for n, e in found.items()}

    seen = wait_until(states, timeout=60, what="every CTJ reported")
    assert set(seen.values()) == {"Present"}, {n: s for n, s in seen.items() if s != "Present"}


def _requests(text: str, verb: str, resource: str) -> float:
    pattern = rf'^changejob_api_requests_total{{resource="{resource}",verb="{verb}"}} ([0-9.e+]+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_start_reads_the_ctjs_once(kube: Kube, operator_factory: Any) -> None:
    """A single replica owns every shard from the start: its first list reads every CTJ, and reading
    them all again right after (as for shards gained while a list runs) would double the start's cost."""
    kube.run("create", "configmap", "my-config", "-n", kube.ns, "--from-literal=k=0")
    kube.run("apply", "-n", kube.ns, "-f", "-", input_=FIRST_TRIGGER.format(ns=kube.ns))
    proc = operator_factory()
    wait_until(baseline_recorded(kube, "my-first-trigger"), what="baseline")
    text = proc.metrics()
    assert _requests(text, "list", "changetriggeredjobs") == 1.0, text
    assert _requests(text, "watch", "changetriggeredjobs") >= 1.0
    assert _requests(text, "update", "changetriggeredjobs/status") >= 1.0
