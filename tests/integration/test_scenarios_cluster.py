"""Cluster-scoped resources: a CTJ in a namespace watching the fake Node ``kwok-node-0``.

The node is shared by the whole cluster, so each test labels it with a key unique to its namespace
and removes that label again whatever happens.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration

NODE = "kwok-node-0"
HEARTBEAT = 'status.conditions[?(@.type=="Ready")].lastHeartbeatTime'


def node_ref(fields: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": NODE, "fields": fields}  # no namespace


@pytest.fixture
def node_label(kube: Kube) -> Iterator[str]:
    """A label key for this test; removed from the node afterwards."""
    key = "scenario.changejob.dev/" + kube.ns[-60:].strip("-")
    yield key
    kube.run("label", "node", NODE, f"{key}-", check=False)


def label_node(kube: Kube, key: str, value: str) -> None:
    kube.run("label", "node", NODE, f"{key}={value}", "--overwrite")


def heartbeat(kube: Kube) -> str:
    """Do what kwok's heartbeat stage does: rewrite the Ready condition's lastHeartbeatTime."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    node = kube.get("node", NODE, namespaced=False)
    assert node is not None
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    if ready["lastHeartbeatTime"] == now:  # same second as the last beat: make it differ
        now = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": now}]}}
    kube.run("patch", "node", NODE, "--subresource=status", "--type=strategic", "-p", json.dumps(patch))
    return now


def probe_fired(kube: Kube, times: int) -> bool:
    return len(kube.jobs("heartbeat-probe")) >= times


def test_node_label_change_triggers(kube: Kube, operator: OperatorProcess, node_label: str) -> None:
    kube.apply(ctj_body("node-watcher", [node_ref(["metadata.labels"])], cooldown="0s"))
    wait_until(baseline_recorded(kube, "node-watcher"), what="baseline")
    entry = kube.ctj("node-watcher")["status"]["resourceHashes"][0]
    assert entry["kind"] == "Node" and entry["name"] == NODE and "namespace" not in entry
    assert entry["state"] == "Present"
    assert kube.jobs("node-watcher") == []

    label_node(kube, node_label, "one")
    jobs = wait_until(lambda: kube.jobs("node-watcher"), what="the Job for the label")
    wait_until(
        lambda: kube.ctj("node-watcher")["status"]["resourceHashes"][0]["changed"] is False,
        what="status after the trigger",
    )
    assert len(kube.jobs("node-watcher")) == 1
    annotations = jobs[0]["metadata"]["annotations"]
    assert annotations["changejob.dev/changed"] == f"Node/{NODE}:metadata.labels"
    assert jobs[0]["metadata"]["namespace"] == kube.ns  # the Job runs where the CTJ lives

    kube.run("label", "node", NODE, f"{node_label}-")  # removing the label is a change too
    wait_until(lambda: len(kube.jobs("node-watcher")) == 2, what="the Job for removing the label")


def test_node_heartbeat_never_triggers(kube: Kube, operator: OperatorProcess, node_label: str) -> None:
    kube.apply(ctj_body("node-any", [node_ref(["*"])], cooldown="0s"))
    # The probe watches the heartbeat itself, so its Jobs show the operator saw each beat.
    kube.apply(ctj_body("heartbeat-probe", [node_ref([HEARTBEAT])], cooldown="0s"))
    wait_until(baseline_recorded(kube, "node-any"), what="baseline")
    wait_until(baseline_recorded(kube, "heartbeat-probe"), what="probe baseline")
    whole = kube.ctj("node-any")["status"]["resourceHashes"][0]["hash"]

    for beat in (1, 2):
        stamp = heartbeat(kube)
        wait_until(
            functools.partial(probe_fired, kube, beat),
            timeout=15,
            what=f"the operator to see heartbeat {beat} ({stamp})",
        )
    assert kube.jobs("node-any") == []
    assert kube.ctj("node-any")["status"]["resourceHashes"][0]["hash"] == whole

    label_node(kube, node_label, "after-heartbeat")
    jobs = wait_until(lambda: kube.jobs("node-any"), what="the Job for the label")
    wait_until(
        lambda: kube.ctj("node-any")["status"]["resourceHashes"][0]["changed"] is False, what="status after the trigger"
    )
    jobs = kube.jobs("node-any")
    assert len(jobs) == 1
    assert jobs[0]["metadata"]["annotations"]["changejob.dev/trigger"] == "1"
