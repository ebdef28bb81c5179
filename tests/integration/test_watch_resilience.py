"""The operator's watches survive a bad network, against the real API server.

The operator process reaches the API server through a TCP relay (relay.py) that can freeze (bytes
stop, connections stay open), drop (every connection closed) or partition. What must hold:

- a silent stream is abandoned after ``--watch-stall-timeout`` and re-established, even when the old
  connection never comes back;
- after a connection reset the watch resumes from the last resourceVersion: each change makes
  exactly one Job, never two;
- when the history the watch would resume from is gone (410), the collection is relisted, and the
  relist alone triggers nothing: only an object that really changed gets a Job;
- a healthy watch that is merely idle is never counted as stalled.

Evidence comes from the operator's /metrics (watch restarts by reason, stalls, triggers, Jobs
created) and from the Jobs in the namespace.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from kubernetes import client as k8s_client
from operator_proc import OperatorProcess
from prometheus_client.parser import text_string_to_metric_families
from relay import Relay, relayed_kubeconfig, target_of

pytestmark = pytest.mark.integration

Start = Callable[..., OperatorProcess]

# kube-apiserver's watch cache keeps every event younger than this (DefaultEventFreshDuration in
# k8s.io/apiserver/pkg/storage/cacher: the bookmark frequency of one minute plus 15 s), growing its
# buffer as needed; only older events can be pushed out by newer ones.
EVENT_FRESH_SECONDS = 75.0


# --- metrics ----------------------------------------------------------------------------------------
class Metrics:
    """One scrape of the operator's /metrics."""

    def __init__(self, proc: OperatorProcess) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(proc.metrics()):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)

    def get(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def delta(self, before: Metrics, name: str, **labels: str) -> float:
        return self.get(name, **labels) - before.get(name, **labels)


def restarts(m: Metrics, reason: str) -> float:
    return m.get("changejob_watch_restarts_total", reason=reason)


def log_lines(proc: OperatorProcess, message: str, *, watch: str | None = None) -> list[dict[str, Any]]:
    """The operator's JSON log records whose message starts with ``message`` (and of ``watch``)."""
    found = []
    for line in proc.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if str(record.get("msg", "")).startswith(message) and (watch is None or record.get("watch") == watch):
            found.append(record)
    return found


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def relay(api_client: k8s_client.ApiClient) -> Iterator[Relay]:
    r = Relay(*target_of(api_client))
    yield r
    r.close()


@pytest.fixture
def relayed_operator(cluster: Any, namespace: str, crd: None, tmp_path: Path, relay: Relay) -> Iterator[Start]:
    """Start the real operator with a kubeconfig that reaches the API server only through ``relay``."""
    kubeconfig = relayed_kubeconfig(Path(cluster.kubeconfig), relay, tmp_path / "relayed-kubeconfig.yaml")
    started: list[OperatorProcess] = []

    def start(*, extra: tuple[str, ...] = ()) -> OperatorProcess:
        proc = OperatorProcess(kubeconfig=str(kubeconfig), namespace=namespace, workdir=tmp_path, extra=extra)
        started.append(proc)
        return proc.start()

    yield start
    relay.thaw()
    for proc in started:
        proc.stop()
    for proc in started:
        print(f"--- {proc.name} log (tail) ---\n{proc.logs()[-4000:]}")


def watch_configmap(kube: Kube, ctj: str, configmap: str, *, fields: list[str] | None = None) -> None:
    """A ConfigMap and a CTJ (cooldown 0s, long history) watching it; returns once the baseline is set."""
    kube.run("create", "configmap", configmap, "-n", kube.ns, "--from-literal=k=0")
    ref: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "name": configmap, "namespace": kube.ns}
    if fields:
        ref["fields"] = fields
    kube.apply(ctj_body(ctj, [ref], cooldown="0s", history=50))
    wait_until(baseline_recorded(kube, ctj), what=f"baseline of {ctj}")


def assert_one_job_per_trigger(jobs: Sequence[Mapping[str, Any]]) -> None:
    """Trigger numbers run 1..n without gaps and no two Jobs covered the same observed state."""
    annotations = [j["metadata"]["annotations"] for j in jobs]
    assert [int(a["changejob.dev/trigger"]) for a in annotations] == list(range(1, len(jobs) + 1))
    covered = [a["changejob.dev/hashes"] for a in annotations]
    assert len(set(covered)) == len(covered), f"two Jobs for the same state: {covered}"


def caught_up(kube: Kube, ctj: str) -> bool:
    """The CTJ's reference hash equals what the operator currently observes (nothing pending)."""
    entries = (kube.ctj(ctj).get("status") or {}).get("resourceHashes") or []
    return bool(entries) and all(e.get("hash") == e.get("lastTriggeredHash") for e in entries)


# --- 1. stalled watch -------------------------------------------------------------------------------
def test_stalled_watch_is_abandoned_and_reestablished(kube: Kube, relay: Relay, relayed_operator: Start) -> None:
    """Frozen network: the watch goes silent without closing. After the stall timeout the operator must
    give the stream up and open a new one; the frozen connections never come back."""
    op = relayed_operator(extra=("--watch-stall-timeout=3s",))
    watch_configmap(kube, "stall", "cfg")
    stream = f"configmaps.core/{kube.ns}"
    before = Metrics(op)
    stalls_logged = len(log_lines(op, "watch stalled", watch=stream))

    relay.freeze()
    kube.patch("configmap", "cfg", {"data": {"k": "1"}})
    time.sleep(5)
    during = Metrics(op)
    accepted = relay.accepted
    relay.thaw(revive=False)  # what was open during the freeze stays dead
    thawed = time.monotonic()

    # The new stream sees the change within seconds; the Job's POST may first be sent on a keep-alive
    # connection pooled before the freeze, which stays dead, and wait out the 30 s read timeout.
    jobs = wait_until(lambda: kube.jobs("stall"), timeout=90, what="the Job for the change made while frozen")
    print(f"Job {time.monotonic() - thawed:.1f}s after the network came back")
    time.sleep(3)
    jobs = kube.jobs("stall")
    after = Metrics(op)
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert during.delta(before, "changejob_watch_stalls_total") >= 1, "no stall counted while frozen"
    assert restarts(during, "stalled") > restarts(before, "stalled")
    assert len(log_lines(op, "watch stalled", watch=stream)) > stalls_logged, "the ConfigMap stream never stalled"
    assert relay.accepted > accepted, "no new connection after the freeze"
    assert after.delta(before, "changejob_jobs_created_total") == 1
    assert after.delta(before, "changejob_triggers_total", result="created") == 1

    # The re-established stream delivers the next change as usual.
    kube.patch("configmap", "cfg", {"data": {"k": "2"}})
    wait_until(lambda: len(kube.jobs("stall")) == 2, timeout=30, what="the Job for a change after recovery")
    assert_one_job_per_trigger(kube.jobs("stall"))


# --- 2. dropped connections -------------------------------------------------------------------------
def test_dropped_connections_resume_without_duplicates(kube: Kube, relay: Relay, relayed_operator: Start) -> None:
    """Connection resets: every change is seen after the watch resumes, each makes exactly one Job."""
    op = relayed_operator()
    watch_configmap(kube, "drops", "cfg")
    before = Metrics(op)

    # Reset every connection, then change the object while the operator reconnects: the watch resumes
    # from its resourceVersion and replays the change. The previous round's Job proves the stream was
    # healthy before each reset, so each reconnect should be as prompt as the first.
    latencies: list[float] = []
    for round_ in range(1, 7):
        relay.drop()
        kube.patch("configmap", "cfg", {"data": {"k": str(round_)}})
        start = time.monotonic()
        wait_until(
            lambda n=round_: len(kube.jobs("drops")) >= n,  # type: ignore[misc]
            timeout=70,
            interval=0.1,
            what=f"the Job of round {round_} (latencies so far {latencies})",
        )
        latencies.append(round(time.monotonic() - start, 1))
    print(f"change-to-Job after a connection reset, per round: {latencies}")

    # Changes while connections keep being reset: however many of them the operator sees, it ends up
    # with the final state triggered exactly once and no Job twice.
    stop = threading.Event()

    def keep_dropping() -> None:
        while not stop.wait(0.3):
            relay.drop()

    dropper = threading.Thread(target=keep_dropping, daemon=True)
    dropper.start()
    try:
        for value in ("a", "b", "c", "d"):
            kube.patch("configmap", "cfg", {"data": {"k": value}})
            time.sleep(0.7)
    finally:
        stop.set()
        dropper.join()
    wait_until(lambda: caught_up(kube, "drops"), timeout=90, what="the final state triggered")
    time.sleep(3)

    jobs = kube.jobs("drops")
    after = Metrics(op)
    assert 7 <= len(jobs) <= 10, [j["metadata"]["annotations"] for j in jobs]
    assert_one_job_per_trigger(jobs)
    final = kube.ctj("drops")["status"]["resourceHashes"][0]
    assert jobs[-1]["metadata"]["annotations"]["changejob.dev/hashes"] == final["hash"]
    assert kube.ctj("drops")["status"]["triggerCount"] == len(jobs)
    created = after.delta(before, "changejob_jobs_created_total")
    skipped = after.delta(before, "changejob_triggers_total", result="skipped")
    assert created + skipped == len(jobs)  # a lost create answer is adopted, not repeated
    assert after.delta(before, "changejob_triggers_total", result="created") == created
    assert restarts(after, "error") - restarts(before, "error") >= 6
    assert restarts(after, "gone") == restarts(before, "gone")
    # One reset after a healthy stream is not a reason to wait longer than after the first one.
    assert max(latencies) < 5, f"change-to-Job after the n-th connection reset (s): {latencies}"


# --- 3. 410 Gone ------------------------------------------------------------------------------------
def probe_watch(api_client: k8s_client.ApiClient, namespace: str, resource_version: str) -> list[dict[str, Any]]:
    """The first events of a watch on the namespace's ConfigMaps from ``resource_version`` (1 s)."""
    response = cast(
        urllib3.BaseHTTPResponse,
        k8s_client.CoreV1Api(api_client).list_namespaced_config_map(
            namespace,
            watch=True,
            resource_version=resource_version,
            timeout_seconds=1,
            _preload_content=False,
            _request_timeout=10,
        ),
    )
    try:
        return [json.loads(line) for line in response.data.splitlines() if line.strip()]
    finally:
        response.release_conn()


def list_version(listed: Any) -> str:
    """The resourceVersion of a list answer."""
    version = listed.metadata.resource_version if listed.metadata else None
    assert version, listed
    return str(version)


def expired(events: list[dict[str, Any]]) -> bool:
    return any(e.get("type") == "ERROR" and e["object"].get("code") == 410 for e in events)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_expired_history_relists_without_spurious_triggers(
    kube: Kube, relay: Relay, relayed_operator: Start, api_client: k8s_client.ApiClient
) -> None:
    """The operator is cut off while its watch history is pushed out of the API server's watch cache:
    it must relist (410 Gone), trigger for the one object that changed and for nothing else."""
    op = relayed_operator(extra=("--watch-stall-timeout=300s",))
    watch_configmap(kube, "changes", "watched")
    watch_configmap(kube, "steady", "still", fields=["data"])
    kube.run("create", "configmap", "churn", "-n", kube.ns, "--from-literal=n=0")
    time.sleep(2)  # let the churn ConfigMap's event reach the operator: it resumes after it
    before = Metrics(op)

    # Freeze: the operator's streams stay open but nothing reaches it from now on.
    relay.freeze()
    core = k8s_client.CoreV1Api(api_client)
    resume_from = list_version(core.list_namespaced_config_map(kube.ns))
    kube.patch("configmap", "watched", {"data": {"k": "changed"}})
    kube.run("label", "configmap", "still", "-n", kube.ns, "unhashed=label")  # outside the CTJ's fields
    assert not expired(probe_watch(api_client, kube.ns, resume_from))

    # Events younger than EVENT_FRESH_SECONDS are never evicted; after that, a few hundred new ones
    # push them (and the operator's resume point) out of the cache.
    time.sleep(EVENT_FRESH_SECONDS + 2)
    writes = 0
    while not expired(probe_watch(api_client, kube.ns, resume_from)):
        assert writes < 3000, f"resourceVersion {resume_from} still in the watch cache after {writes} writes"
        for _ in range(100):
            writes += 1
            core.patch_namespaced_config_map("churn", kube.ns, {"data": {"n": str(writes)}})
    print(f"resourceVersion {resume_from} expired after {writes} writes")
    assert not kube.jobs("changes") and not kube.jobs("steady")

    # Reconnect: drop what was frozen (its buffered events are lost) and let new connections through.
    relay.drop()
    relay.thaw()
    wait_until(lambda: kube.jobs("changes"), timeout=60, what="the Job for the change made while cut off")
    wait_until(lambda: caught_up(kube, "changes") and caught_up(kube, "steady"), timeout=30, what="caught up")
    time.sleep(3)
    after = Metrics(op)
    print(f"watch restarts: { {r: restarts(after, r) - restarts(before, r) for r in ('gone', 'error', 'stalled')} }")
    assert restarts(after, "gone") > restarts(before, "gone"), "no relist after 410 Gone"
    assert log_lines(op, "watch history expired", watch=f"configmaps.core/{kube.ns}")
    assert len(kube.jobs("changes")) == 1
    assert kube.jobs("steady") == [], "a relist alone triggered"
    assert kube.ctj("steady")["status"]["triggerCount"] == 0
    assert after.delta(before, "changejob_jobs_created_total") == 1
    assert after.delta(before, "changejob_triggers_total", result="created") == 1


# --- 4. bookmarks -----------------------------------------------------------------------------------
def record_bookmarks(
    api_client: k8s_client.ApiClient, namespace: str, resource_version: str, seconds: int, out: list[float]
) -> None:
    """Watch the namespace's Jobs with bookmarks for ``seconds``; append each bookmark's arrival time."""
    response = cast(
        urllib3.BaseHTTPResponse,
        k8s_client.BatchV1Api(api_client).list_namespaced_job(
            namespace,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=seconds,
            _preload_content=False,
            _request_timeout=seconds + 30,
        ),
    )
    try:
        buffer = b""
        for chunk in response.stream(amt=None):
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1 :]
                if line.strip() and json.loads(line).get("type") == "BOOKMARK":
                    out.append(time.monotonic())
    finally:
        response.release_conn()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_idle_watch_is_not_counted_as_stalled(
    kube: Kube, operator_factory: Start, api_client: k8s_client.ApiClient
) -> None:
    """A healthy connection on which nothing changes for 70 s, with a 30 s stall timeout: no stream may be
    counted as stalled or restarted as one.

    Bookmarks cannot be what keeps such a stream alive: the API server sends a watch a bookmark at
    most about once a minute, and only when its resource type's resourceVersion has moved on since the
    watch began (a write of that type anywhere, or a progress notification from etcd); a quiet type
    may get none for many minutes. A watch of our own on the namespace's Jobs records what does come.
    """
    op = operator_factory(extra=("--watch-stall-timeout=30s",))
    watch_configmap(kube, "idle", "cfg")
    time.sleep(1)
    resource_version = list_version(k8s_client.BatchV1Api(api_client).list_namespaced_job(kube.ns))
    bookmarks: list[float] = []
    started = time.monotonic()
    recorder = threading.Thread(
        target=record_bookmarks, args=(api_client, kube.ns, resource_version, 70, bookmarks), daemon=True
    )
    recorder.start()
    before = Metrics(op)
    stalled_before = len(log_lines(op, "watch stalled"))

    time.sleep(70)
    after = Metrics(op)
    recorder.join(timeout=30)
    stalled = [r.get("watch") for r in log_lines(op, "watch stalled")[stalled_before:]]
    evidence = (
        f"streams counted as stalled: {stalled}; bookmarks received by the operator: "
        f"{after.delta(before, 'changejob_watch_events_total', type='BOOKMARK'):.0f}; bookmarks on our own "
        f"watch of the namespace's Jobs, seconds after it began: {[round(b - started, 1) for b in bookmarks]}"
    )
    print(evidence)
    assert after.delta(before, "changejob_watch_stalls_total") == 0, evidence
    assert restarts(after, "stalled") == restarts(before, "stalled"), evidence
    assert restarts(after, "error") == restarts(before, "error")
    assert kube.jobs("idle") == []
