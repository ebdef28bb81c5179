"""The chart installed as a user installs it, the operator running from the project's image as Pods.

One release per module, in the order a user meets it: `helm install` (Pods Ready under Pod Security
`restricted`, with the chart's RBAC, probes and security context), the admission webhook reached
through its Service, the user guide's first walkthrough with real containers (`kubectl logs
job/<name>` prints what the container printed), /metrics through the metrics Service, `helm upgrade`
to two replicas while changes keep arriving, and `helm uninstall`.

The release watches only this module's namespaces (`watch.namespaces`, which also limits the
webhooks to them): another test session on the same cluster keeps its own operators and CTJs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from e2e_helpers import NODE_NAME, VALUES, Namespaces, RealNode
from rbac_helpers import Helm, Kubectl

import helpers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CHART = helpers.REPO_ROOT / "chart"
FIRST_TRIGGER = helpers.REPO_ROOT / "examples" / "my-first-trigger.yaml"
RELEASE = "kube-changejob"  # the name the user guide's commands assume
DEPLOYMENT = f"{RELEASE}-controller-manager"
CRD = "changetriggeredjobs.triggers.changejob.dev"
SELECTOR = "app.kubernetes.io/instance=" + RELEASE


def operator_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.json("get", "pods", "-n", namespace, "-l", SELECTOR)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def release(real_node: RealNode, e2e: Namespaces, helm: Helm, kubectl: Kubectl) -> Iterator[Namespaces]:
    """The chart installed in e2e.operator with one replica, watching e2e.guide and e2e.load."""
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        e2e.operator,
        "--values",
        str(VALUES),
        "--set",
        "replicaCount=1",
        "--set-json",
        f"watch.namespaces={json.dumps([e2e.guide, e2e.load])}",
        # The CRD may exist already (applied by the integration suite): adopt it.
        "--take-ownership",
        "--force-conflicts",
        "--wait",
        "--timeout",
        "5m",
        timeout=420,
    )
    try:
        yield e2e
    finally:
        if helm("status", RELEASE, "--namespace", e2e.operator, check=False).returncode == 0:
            helm("uninstall", RELEASE, "--namespace", e2e.operator, "--wait", check=False, timeout=420)


def test_operator_pods_are_ready_as_the_chart_runs_them(release: Namespaces, kubectl: Kubectl) -> None:
    (pod,) = operator_pods(kubectl, release.operator)
    assert ready(pod)
    spec, status = pod["spec"], pod["status"]
    assert spec["nodeName"] == NODE_NAME
    (container,) = status["containerStatuses"]
    assert container["image"] == "localhost/kube-changejob:dev" and container["imageID"]
    assert container["restartCount"] == 0 and "running" in container["state"]
    # Admitted under `restricted` Pod Security, with the chart's own security context.
    labels = kubectl.json("get", "namespace", release.operator)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    manager = spec["containers"][0]
    assert manager["securityContext"]["readOnlyRootFilesystem"] is True
    assert manager["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert manager["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["serviceAccountName"] == DEPLOYMENT
    # ... and really in force inside the container: uid 65532, the root file system read-only.
    exec_ = ("exec", "-n", release.operator, pod["metadata"]["name"], "--")
    assert kubectl(*exec_, "id", "-u").stdout.strip() == "65532"
    touched = kubectl(*exec_, "touch", "/probe", check=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr
    # The guide's way to read the controller's log.
    log = kubectl("logs", "-n", release.operator, f"deployment/{DEPLOYMENT}").stdout
    assert log.strip(), "the operator logged nothing"


def test_webhook_is_reached_through_its_service_and_denies(release: Namespaces, kubectl: Kubectl) -> None:
    (pod,) = operator_pods(kubectl, release.operator)
    slices = kubectl.json(
        "get", "endpointslices", "-n", release.operator, "-l", f"kubernetes.io/service-name={RELEASE}-webhook-service"
    )["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert addresses == {pod["status"]["podIP"]}
    # The guide's "resource kind does not exist" (kind: configmap instead of ConfigMap).
    bad = {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": "bad-kind", "namespace": release.guide},
        "spec": {
            "resources": [{"apiVersion": "v1", "kind": "configmap", "name": "my-config", "namespace": release.guide}],
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}], "restartPolicy": "Never"}
                    }
                }
            },
        },
    }
    denied = kubectl("apply", "-f", "-", input_=json.dumps(bad), check=False)
    assert denied.returncode != 0
    assert 'admission webhook "' in denied.stderr and "denied the request" in denied.stderr
    assert "resource kind does not exist: configmap (v1)" in denied.stderr
    assert kubectl("get", "ctj", "bad-kind", "-n", release.guide, "--ignore-not-found").stdout.strip() == ""


def guide_manifest(namespace: str) -> str:
    """examples/my-first-trigger.yaml (the guide's YAML) in this module's namespace instead of default."""
    ctj = yaml.safe_load(FIRST_TRIGGER.read_text())
    ctj["metadata"]["namespace"] = namespace
    for resource in ctj["spec"]["resources"]:
        resource["namespace"] = namespace
    return yaml.safe_dump(ctj)


def test_guide_walkthrough_runs_a_real_container(release: Namespaces, kubectl: Kubectl) -> None:
    ns = ("-n", release.guide)
    kubectl("create", "configmap", "my-config", "--from-literal=key=value", *ns)
    kubectl("apply", "-f", "-", input_=guide_manifest(release.guide))
    helpers.wait_for(
        lambda: all(
            e.get("lastTriggeredHash")
            for e in kubectl.json("get", "ctj", "my-first-trigger", *ns).get("status", {}).get("resourceHashes") or [{}]
        ),
        timeout=60,
        message="the CTJ's baseline",
    )
    kubectl("patch", "configmap", "my-config", *ns, "-p", '{"data":{"key":"newvalue"}}')

    def job_name() -> str | None:
        names = kubectl("get", "jobs", "-l", "changejob.dev/owner=my-first-trigger", *ns, "-o", "name").stdout.split()
        return names[0].removeprefix("job.batch/") if names else None

    name = helpers.wait_for(job_name, timeout=120, message="the Job of the ConfigMap change")
    kubectl("wait", "--for=condition=Complete", f"job/{name}", *ns, "--timeout=180s", timeout=200)

    logs = kubectl("logs", f"job/{name}", *ns)
    assert logs.stdout.startswith("ConfigMap changed at:"), logs.stdout
    (pod,) = kubectl.json("get", "pods", *ns, "-l", f"job-name={name}")["items"]
    assert pod["spec"]["nodeName"] == NODE_NAME
    (container,) = pod["status"]["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 0 and container["imageID"]
    status = helpers.wait_for(
        lambda: (
            (kubectl.json("get", "ctj", "my-first-trigger", *ns).get("status") or {}).get("lastJobStatus")
            == "Succeeded"
        ),
        timeout=60,
        message="lastJobStatus Succeeded",
    )
    assert status
    # The guide's "Filter for specific ChangeTriggeredJob" in the controller's log.
    log = kubectl("logs", "-n", release.operator, f"deployment/{DEPLOYMENT}").stdout
    assert "my-first-trigger" in log


def test_metrics_are_scraped_through_the_service(release: Namespaces, kubectl: Kubectl) -> None:
    path = f"/api/v1/namespaces/{release.operator}/services/http:{RELEASE}-metrics-service:metrics/proxy/metrics"
    metrics = kubectl("get", "--raw", path).stdout
    samples = [line for line in metrics.splitlines() if line.startswith("changejob_triggers_total{")]
    created = sum(float(line.rsplit(" ", 1)[1]) for line in samples if 'result="created"' in line)
    assert created >= 1, samples  # the walkthrough's Job
    assert "process_resident_memory_bytes" in metrics


class Changes:
    """Changes to ConfigMaps watched by CTJs, each made only once the previous one got its Job.

    A ConfigMap changed twice before the operator reads it is one change to a level-triggered
    operator, so pacing each ConfigMap this way makes "one Job per change" the exact expectation.
    A ConfigMap changes at most every ``PACE`` seconds, which keeps the number of Jobs modest.
    """

    PACE = 3.0

    def __init__(self, kubectl: Kubectl, namespace: str, names: list[str]) -> None:
        self.kubectl, self.ns, self.names = kubectl, namespace, names
        self.made = dict.fromkeys(names, 0)
        self.last = dict.fromkeys(names, 0.0)
        self.times: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def jobs(self) -> dict[str, list[int]]:
        """The trigger numbers of each CTJ's Jobs."""
        items = self.kubectl.json("get", "jobs", "-n", self.ns, "-l", "changejob.dev/owner")["items"]
        found: dict[str, list[int]] = {name: [] for name in self.names}
        for job in items:
            owner = job["metadata"]["labels"]["changejob.dev/owner"]
            found.setdefault(owner, []).append(int(job["metadata"]["annotations"]["changejob.dev/trigger"]))
        return {owner: sorted(numbers) for owner, numbers in found.items()}

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                jobs = self.jobs()
                for name in self.names:
                    if len(jobs[name]) >= self.made[name] and time.monotonic() - self.last[name] >= self.PACE:
                        self.last[name] = time.monotonic()
                        self.made[name] += 1
                        patch = json.dumps({"data": {"change": str(self.made[name])}})
                        self.kubectl("patch", "configmap", name, "-n", self.ns, "-p", patch)
                        self.times.append(time.monotonic())
                time.sleep(0.3)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error


def load_ctj(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": namespace}],
            "cooldown": "0s",
            "history": 1000,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}], "restartPolicy": "Never"}
                    }
                }
            },
        },
    }


def test_rolling_upgrade_to_two_replicas_loses_and_repeats_no_change(
    release: Namespaces, helm: Helm, kubectl: Kubectl
) -> None:
    names = [f"load-{i}" for i in range(6)]
    for name in names:
        kubectl("create", "configmap", name, "-n", release.load, "--from-literal=change=0")
        kubectl("apply", "-f", "-", input_=json.dumps(load_ctj(name, release.load)))
    for name in names:
        helpers.wait_for(
            lambda name=name: all(
                e.get("lastTriggeredHash")
                for e in (kubectl.json("get", "ctj", name, "-n", release.load).get("status") or {}).get(
                    "resourceHashes"
                )
                or [{}]
            ),
            timeout=60,
            message=f"the baseline of {name}",
        )
    (old_pod,) = operator_pods(kubectl, release.operator)
    changes = Changes(kubectl, release.load, names)
    changes.thread.start()
    try:
        helpers.wait_for(lambda: len(changes.times) >= 2 * len(names), timeout=120, message="two rounds of changes")
        upgrade_start = time.monotonic()
        helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            release.operator,
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--set",
            "podAnnotations.changejob\\.dev/rollout=e2e",
            "--wait",
            "--timeout",
            "5m",
            timeout=420,
        )
        upgrade_end = time.monotonic()
        time.sleep(15)  # changes keep arriving at the new replicas
    finally:
        changes.stop.set()
        changes.thread.join(60)
    assert changes.error is None, changes.error
    during = sum(upgrade_start <= t <= upgrade_end for t in changes.times)
    assert during >= len(names), f"only {during} changes arrived during the rollout"

    def settled() -> dict[str, list[int]] | None:
        jobs = changes.jobs()
        return jobs if all(len(jobs[n]) >= changes.made[n] for n in names) else None

    jobs = helpers.wait_for(settled, timeout=120, message="a Job for every change")
    for name in names:
        assert jobs[name] == list(range(1, changes.made[name] + 1)), (name, jobs[name], changes.made[name])
        status = kubectl.json("get", "ctj", name, "-n", release.load)["status"]
        assert status["triggerCount"] == changes.made[name]

    pods = operator_pods(kubectl, release.operator)
    assert len(pods) == 2 and all(ready(p) for p in pods)
    new_names = {p["metadata"]["name"] for p in pods}
    assert old_pod["metadata"]["name"] not in new_names  # rolled, not just scaled
    # Both replicas own shards once the handover settles.
    helpers.wait_for(
        lambda: (
            {
                lease["spec"].get("holderIdentity")
                for lease in kubectl.json("get", "leases", "-n", release.operator, "-l", "changejob.dev/role=shard")[
                    "items"
                ]
            }
            == new_names
        ),
        timeout=90,
        message="shards held by both new replicas",
    )


def test_uninstall_removes_the_operator_and_keeps_the_crd_and_ctjs(
    release: Namespaces, helm: Helm, kubectl: Kubectl
) -> None:
    ctjs_before = kubectl("get", "ctj", "-n", release.load, "-o", "name").stdout.split()
    assert ctjs_before
    helm("uninstall", RELEASE, "--namespace", release.operator, "--wait", "--timeout", "3m", timeout=240)
    helpers.wait_for(lambda: not operator_pods(kubectl, release.operator), timeout=120, message="operator Pods gone")
    assert kubectl("get", "deployment", DEPLOYMENT, "-n", release.operator, "--ignore-not-found").stdout.strip() == ""
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        left = kubectl("get", kind, "-l", SELECTOR, "-o", "name").stdout.strip()
        assert left == "", left
    kubectl("get", "crd", CRD)  # kept (helm.sh/resource-policy: keep)
    assert kubectl("get", "ctj", "-n", release.load, "-o", "name").stdout.split() == ctjs_before
    assert kubectl("get", "ctj", "my-first-trigger", "-n", release.guide, "-o", "name").stdout.strip()
