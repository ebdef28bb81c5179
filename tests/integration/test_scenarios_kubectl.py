"""The user guide's kubectl commands, run as written against a real CTJ and its Jobs.

Where the guide pipes into ``jq``, the output is parsed as JSON instead (that is what jq needs).
``kubectl logs job/<name>`` needs a kubelet that ran the container: tests/e2e runs it on the real node.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration

NAME = "my-trigger"


def get_ctj(kube: Kube, *args: str) -> str:
    return kube.run("get", "ctj", NAME, "-n", kube.ns, *args).stdout


def jsonpath(kube: Kube, expression: str) -> str:
    return get_ctj(kube, "-o", f"jsonpath={expression}")


def my_trigger(kube: Kube) -> None:
    """The guide's my-config / my-trigger pair, cooldown 0s so the test need not wait 60 s."""
    kube.run("create", "configmap", "my-config", "-n", kube.ns, "--from-literal=key=value")
    kube.apply(
        ctj_body(
            NAME, [{"apiVersion": "v1", "kind": "ConfigMap", "name": "my-config", "namespace": kube.ns}], cooldown="0s"
        )
    )
    wait_until(baseline_recorded(kube, NAME), what="baseline")


def job_done(kube: Kube, number: int, phase: str) -> str:
    """Wait until trigger ``number``'s Job has reached ``phase``; return its name."""

    def check() -> str | None:
        st = kube.ctj(NAME).get("status") or {}
        if st.get("triggerCount") == number and st.get("lastJobStatus") == phase:
            return str(st["lastJobName"])
        return None

    found = wait_until(check, timeout=60, what=f"trigger {number} {phase}")
    assert found is not None
    return found


@pytest.fixture
def two_jobs(kube: Kube, operator: OperatorProcess) -> tuple[str, str]:
    """my-trigger with one succeeded and one failed Job (the second from a template that fails)."""
    my_trigger(kube)
    # "Force a change", as the troubleshooting section does it.
    kube.run("annotate", "configmap", "my-config", "-n", kube.ns, f"test=value-{int(time.time())}")
    succeeded = job_done(kube, 1, "Succeeded")
    kube.patch(
        "changetriggeredjob",
        NAME,
        {
            "spec": {
                "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"changejob.dev/test-fail": "true"}}}}}
            }
        },
    )
    wait_until(lambda: kube.ctj(NAME)["status"].get("observedGeneration") == 2, what="the edited template")
    kube.run("patch", "configmap", "my-config", "-n", kube.ns, "-p", '{"data":{"key":"newvalue"}}')
    failed = job_done(kube, 2, "Failed")
    return succeeded, failed


def test_status_commands(kube: Kube, two_jobs: tuple[str, str]) -> None:
    _, failed = two_jobs
    listing = kube.run("get", "ctj", "-A").stdout.splitlines()
    assert listing[0].split()[:2] == ["NAMESPACE", "NAME"]
    row = next(line.split() for line in listing if NAME in line.split())
    assert row[0] == kube.ns and failed in row and "Failed" in row

    status = json.loads(jsonpath(kube, "{.status}"))
    assert status["triggerCount"] == 2 and status["lastJobName"] == failed
    hashes = json.loads(jsonpath(kube, "{.status.resourceHashes}"))
    assert [(h["kind"], h["name"], h["state"]) for h in hashes] == [("ConfigMap", "my-config", "Present")]
    assert hashes[0]["hash"] == hashes[0]["lastTriggeredHash"]
    conds = json.loads(jsonpath(kube, "{.status.conditions}"))
    assert {c["type"] for c in conds} == {"Ready", "Available", "Progressing", "Degraded"}
    assert jsonpath(kube, "{.status.lastJobStatus}") == "Failed"
    # RFC 3339 (with microseconds: the cooldown is measured from it).
    triggered = dt.datetime.fromisoformat(jsonpath(kube, "{.status.lastTriggeredTime}").replace("Z", "+00:00"))
    assert abs(triggered - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    described = kube.run("describe", "ctj", NAME, "-n", kube.ns).stdout
    assert f"Name:         {NAME}" in described and failed in described
    assert NAME in kube.run("get", "changetriggeredjobs", "-n", kube.ns).stdout
    yaml_view = kube.run("get", "changetriggeredjob", NAME, "-n", kube.ns, "-o", "yaml").stdout
    assert "lastJobStatus: Failed" in yaml_view


def test_job_commands(kube: Kube, two_jobs: tuple[str, str]) -> None:
    succeeded, failed = two_jobs
    listed = kube.run("get", "jobs", "-n", kube.ns, "-l", f"changejob.dev/owner={NAME}").stdout
    assert succeeded in listed and failed in listed
    unsuccessful = kube.run(
        "get", "jobs", "-n", kube.ns, "-l", f"changejob.dev/owner={NAME}", "--field-selector", "status.successful=0"
    ).stdout
    assert failed in unsuccessful and succeeded not in unsuccessful
    described = kube.run("describe", "job", failed, "-n", kube.ns).stdout
    assert f"changejob.dev/owner={NAME}" in described and "changejob.dev/trigger: 2" in described


def test_troubleshooting_commands(kube: Kube, operator: OperatorProcess) -> None:
    my_trigger(kube)
    assert kube.run("get", "configmap", "my-config", "-n", kube.ns).returncode == 0
    assert (
        "changetriggeredjobs.triggers.changejob.dev"
        in kube.run("get", "crd", "changetriggeredjobs.triggers.changejob.dev").stdout
    )
    assert kube.run("auth", "can-i", "create", "changetriggeredjobs", "-n", kube.ns).stdout.strip() == "yes"
    before = json.loads(jsonpath(kube, "{.status.resourceHashes}"))[0]["hash"]
    kube.run("annotate", "configmap", "my-config", "-n", kube.ns, f"test=value-{int(time.time())}")
    job_done(kube, 1, "Succeeded")
    after = json.loads(jsonpath(kube, "{.status.resourceHashes}"))[0]
    assert after["hash"] != before and after["hash"] == after["lastTriggeredHash"]


def test_explain_fields(kube: Kube) -> None:
    out = kube.run("explain", "ctj.spec.resources.fields").stdout
    assert "KIND:       ChangeTriggeredJob" in out
    assert "FIELD: fields <[]string>" in out
    assert "kubectl JSONPath" in out.replace("\n", " ").replace("  ", " ")


# --------------------------------------------------------------------------------------------------
# Watching with -w


class Watcher:
    """A ``kubectl ... -w`` child process whose output lines are collected by a thread."""

    def __init__(self, cluster: Any, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line_with(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout}s; got {self.seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def test_watch_commands(kube: Kube, operator: OperatorProcess, cluster: Any, watchers: list[Watcher]) -> None:
    my_trigger(kube)
    ctj_watch = Watcher(cluster, "get", "ctj", NAME, "-n", kube.ns, "-w")
    job_watch = Watcher(cluster, "get", "jobs", "-n", kube.ns, "-l", f"changejob.dev/owner={NAME}", "-w")
    watchers += [ctj_watch, job_watch]
    assert ctj_watch.line_with("NAME").split()[:3] == ["NAME", "CONDITION", "READY"]
    ctj_watch.line_with(NAME)  # the current state first

    kube.run("patch", "configmap", "my-config", "-n", kube.ns, "-p", '{"data":{"key":"newvalue"}}')
    job_name = wait_until(lambda: kube.ctj(NAME)["status"].get("lastJobName"), what="the Job")
    assert job_watch.line_with(job_name).split()[0] == job_name
    assert ctj_watch.line_with(job_name).split()[0] == NAME  # a status update shows the new Job
