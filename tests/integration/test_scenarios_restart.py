"""Operator restarts: the reference hashes live in the CTJ's status, so a new process picks up where
the old one stopped. A change made while no operator ran triggers exactly once; no change, no Job.
Stopping with SIGKILL (no shutdown code runs) must behave like SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

Factory = Callable[..., OperatorProcess]
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]


def metric(proc: OperatorProcess, name: str) -> float:
    """The value of one unlabelled sample of the operator's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(proc.metrics()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return 0.0


def settled(proc: OperatorProcess) -> bool:
    """The operator has synced its watches and evaluated the CTJ with them: after the ConfigMap stream
    synced it woke the CTJ, and that reconcile (the second at least) is done with nothing queued."""
    return (
        proc.http_status("/readyz") == 200
        and metric(proc, "changejob_watch_streams") >= 1
        and metric(proc, "changejob_reconcile_duration_seconds_count") >= 2
        and metric(proc, "changejob_workqueue_depth") == 0
    )


def start_watching(kube: Kube, operator_factory: Factory) -> tuple[OperatorProcess, dict[str, Any]]:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    first = operator_factory(name="first")
    kube.apply(
        ctj_body(
            "survivor", [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "namespace": kube.ns}], cooldown="0s"
        )
    )
    wait_until(baseline_recorded(kube, "survivor"), what="baseline")
    return first, kube.ctj("survivor")["status"]


def stop(proc: OperatorProcess, sig: int) -> None:
    code = proc.stop(sig)
    expected = 0 if sig == signal.SIGTERM else -signal.SIGKILL
    assert code == expected, f"exit code {code} after {signal.Signals(sig).name}:\n{proc.logs()[-3000:]}"


def only_job(kube: Kube) -> dict[str, Any]:
    wait_until(lambda: kube.jobs("survivor"), what="a Job")
    wait_until(
        lambda: (
            kube.ctj("survivor")["status"]["resourceHashes"][0]["changed"] is False
            and kube.ctj("survivor")["status"]["triggerCount"] >= 1
        ),
        what="status after the trigger",
    )
    jobs = kube.jobs("survivor")
    assert [j["metadata"]["annotations"]["changejob.dev/trigger"] for j in jobs] == ["1"]
    assert kube.ctj("survivor")["status"]["triggerCount"] == 1
    return jobs[0]


@pytest.mark.parametrize("sig", SIGNALS)
def test_change_while_down_triggers_once(kube: Kube, operator_factory: Factory, sig: int) -> None:
    first, before = start_watching(kube, operator_factory)
    stop(first, sig)
    kube.patch("configmap", "cfg", {"data": {"k": "changed-while-down"}})
    assert kube.jobs("survivor") == []

    second = operator_factory(name="second")
    job = only_job(kube)
    assert job["metadata"]["annotations"]["changejob.dev/changed"] == f"ConfigMap/{kube.ns}/cfg:*"
    wait_until(lambda: settled(second), what="the new operator to settle")
    assert len(kube.jobs("survivor")) == 1
    entry = kube.ctj("survivor")["status"]["resourceHashes"][0]
    assert entry["lastTriggeredHash"] != before["resourceHashes"][0]["lastTriggeredHash"]


@pytest.mark.parametrize("sig", SIGNALS)
def test_restart_without_changes_does_not_trigger(kube: Kube, operator_factory: Factory, sig: int) -> None:
    first, before = start_watching(kube, operator_factory)
    stop(first, sig)

    second = operator_factory(name="second")
    wait_until(lambda: settled(second), what="the new operator to evaluate the CTJ")
    assert kube.jobs("survivor") == []
    after = kube.ctj("survivor")["status"]
    assert after["triggerCount"] == 0
    assert after["resourceHashes"][0]["lastTriggeredHash"] == before["resourceHashes"][0]["lastTriggeredHash"]

    # A change now is the first trigger: nothing fired at the restart.
    kube.patch("configmap", "cfg", {"data": {"k": "changed-after-restart"}})
    only_job(kube)
