"""Observability end to end: traces in a real Jaeger, /metrics, JSON logs, probes, no Secret values.

The operator runs as a real process (``kube-changejob run``) against the test cluster. For traces it
exports OTLP/HTTP to a Jaeger built from its Go module (``.tools/bin/jaeger``) and started with
``tools/jaeger.yaml`` on free loopback ports; the assertions read what Jaeger's query API answers,
the same data its UI shows.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ctj_helpers import Kube, baseline_recorded, ctj_body, wait_until
from operator_proc import OperatorProcess, free_port
from prometheus_client.parser import text_string_to_metric_families

import helpers

pytestmark = pytest.mark.integration

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
JAEGER_BIN = helpers.TOOLS_BIN / "jaeger"
JAEGER_CONFIG = REPO / "tools" / "jaeger.yaml"
COOLDOWN = 5  # seconds: long enough for three changes inside it, short enough to wait out


# --------------------------------------------------------------------------------------------------
# Jaeger


@dataclasses.dataclass(frozen=True)
class Span:
    """One span of Jaeger's JSON (``/api/traces``): name, ids, kind, tags and references."""

    raw: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["operationName"])

    @property
    def span_id(self) -> str:
        return str(self.raw["spanID"])

    @property
    def trace_id(self) -> str:
        return str(self.raw["traceID"])

    @property
    def start(self) -> int:
        """Start time in microseconds since the epoch."""
        return int(self.raw["startTime"])

    @property
    def tags(self) -> dict[str, Any]:
        return {tag["key"]: tag["value"] for tag in self.raw.get("tags") or ()}

    @property
    def kind(self) -> str:
        return str(self.tags.get("span.kind", ""))

    @property
    def parent(self) -> str | None:
        """The span id of the CHILD_OF reference (the parent), None for a root span."""
        parents = [r["spanID"] for r in self.raw.get("references") or () if r["refType"] == "CHILD_OF"]
        assert len(parents) <= 1, f"span {self.name} has several parents: {parents}"
        return parents[0] if parents else None

    @property
    def links(self) -> set[tuple[str, str]]:
        """The span links, as Jaeger shows them: FOLLOWS_FROM references, (trace id, span id)."""
        return {(r["traceID"], r["spanID"]) for r in self.raw.get("references") or () if r["refType"] == "FOLLOWS_FROM"}

    def tag_list(self, key: str) -> list[Any]:
        """A list-valued attribute (Jaeger renders OTLP arrays as a JSON string)."""
        value = self.tags.get(key)
        parsed = json.loads(value) if isinstance(value, str) else value
        assert isinstance(parsed, list), f"attribute {key} of {self.name} is not a list: {value!r}"
        return parsed


@dataclasses.dataclass(frozen=True)
class Trace:
    raw: Mapping[str, Any]

    @property
    def trace_id(self) -> str:
        return str(self.raw["traceID"])

    @property
    def spans(self) -> list[Span]:
        return [Span(s) for s in self.raw.get("spans") or ()]

    @property
    def services(self) -> set[str]:
        return {p["serviceName"] for p in (self.raw.get("processes") or {}).values()}

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str, *, parent: str | None = None) -> Span:
        found = [s for s in self.named(name) if parent is None or s.parent == parent]
        assert len(found) == 1, f"expected one {name!r} span (parent {parent}) in {self.summary()}"
        return found[0]

    def summary(self) -> list[tuple[str, str, str | None]]:
        return [(s.name, s.span_id, s.parent) for s in self.spans]


@dataclasses.dataclass
class Jaeger:
    """A running Jaeger: where to send OTLP and how to ask its query API."""

    otlp_endpoint: str
    query_url: str
    log_path: Path

    def get(self, path: str, **query: str | int) -> Any:
        """GET the query API; the parsed JSON, or None on 404 (a trace not stored yet)."""
        url = self.query_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def traces(self, *, service: str, operation: str | None = None, limit: int = 1000) -> list[Trace]:
        """Traces of ``service`` (with a span named ``operation``), as the UI's search finds them."""
        query: dict[str, str | int] = {"service": service, "limit": limit, "lookback": "1h"}
        if operation is not None:
            query["operation"] = operation
        found = self.get("/api/traces", **query)
        return [Trace(t) for t in (found or {}).get("data") or ()]

    def trace(self, trace_id: str) -> Trace | None:
        found = self.get(f"/api/traces/{trace_id}")
        data = (found or {}).get("data") or []
        return Trace(data[0]) if data else None

    def raw_traces(self, *, service: str) -> str:
        """Every stored trace of ``service`` as the JSON text the query API answers."""
        url = f"{self.query_url}/api/traces?" + urllib.parse.urlencode({"service": service, "limit": 10000})
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """Jaeger from ``.tools/bin/jaeger`` with ``tools/jaeger.yaml``, every port free and on 127.0.0.1."""
    if not JAEGER_BIN.exists():
        reason = f"{JAEGER_BIN} is missing; build it with `tools/build.sh jaeger`"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (in CI the tracing tests must run)", pytrace=False)
        pytest.skip(reason)
    otlp, http, grpc = free_port(), free_port(), free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
        "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{otlp}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{grpc}",
    }
    log_path = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(JAEGER_BIN), "--config", str(JAEGER_CONFIG)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    server = Jaeger(otlp_endpoint=f"http://127.0.0.1:{otlp}", query_url=f"http://127.0.0.1:{http}", log_path=log_path)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"jaeger exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                return _listening(otlp) and server.get("/api/services") is not None
            except OSError:
                return False

        wait_until(up, timeout=30, what="Jaeger's OTLP receiver and query API")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclasses.dataclass
class Traced:
    """An operator exporting its spans to the test's Jaeger under a service name of its own."""

    operator: OperatorProcess
    service: str


@pytest.fixture
def traced(operator_factory: Any, jaeger: Jaeger, namespace: str) -> Traced:
    service = f"kube-changejob-test-{namespace}"
    env = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    return Traced(operator=operator_factory(env=env), service=service)


@pytest.fixture
def untraced(operator_factory: Any) -> OperatorProcess:
    """An operator with tracing off whatever the calling environment says."""
    proc: OperatorProcess = operator_factory(env={"OTEL_SDK_DISABLED": "true"})
    return proc


# --------------------------------------------------------------------------------------------------
# Helpers


def until(fn: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    found = wait_until(fn, timeout=timeout, what=what)
    assert found is not None
    return found


def configmap_ref(kube: Kube, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": kube.ns}


def wait_jobs(kube: Kube, name: str, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The CTJ's Jobs (oldest first) once it has ``count`` of them or more."""

    def enough() -> list[dict[str, Any]] | None:
        jobs = kube.jobs(name)
        return jobs if len(jobs) >= count else None

    return until(enough, what=f"{count} Job(s) of {name}", timeout=timeout)


def highest_sequence_is(kube: Kube, name: str, sequence: int) -> bool:
    """Whether the CTJ's newest Job is the one of trigger ``sequence`` (older ones may be pruned)."""
    return (
        max((int(j["metadata"]["annotations"]["changejob.dev/trigger"]) for j in kube.jobs(name)), default=0)
        == sequence
    )


def resource_changed(kube: Kube, ctj: str, resource: str) -> bool:
    """Whether the CTJ's status shows ``resource`` as changed since its last trigger."""
    entries = (kube.ctj(ctj).get("status") or {}).get("resourceHashes") or []
    return any(e["name"] == resource and e["changed"] for e in entries)


def parse_traceparent(value: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent; fails on anything malformed or unsampled."""
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", value)
    assert match, f"not a W3C traceparent: {value!r}"
    assert int(match.group(3), 16) & 0x01, f"traceparent not sampled: {value!r}"
    return match.group(1), match.group(2)


def job_trace(job: Mapping[str, Any]) -> tuple[str, str]:
    return parse_traceparent(job["metadata"]["annotations"]["traceparent"])


def stored_trace(jaeger: Jaeger, trace_id: str, *, needs: Sequence[str], timeout: float = 30.0) -> Trace:
    """The trace once Jaeger holds a span of each name in ``needs`` (spans arrive in batches)."""

    def complete() -> Trace | None:
        found = jaeger.trace(trace_id)
        if found is None or not all(found.named(name) for name in needs):
            return None
        return found

    return until(complete, what=f"trace {trace_id} with spans {list(needs)}", timeout=timeout)


def watch_events(jaeger: Jaeger, *, service: str, object_name: str) -> list[Span]:
    """Every ``watch.event`` span of ``service`` about ``object_name``, oldest first."""
    spans = [
        span
        for found in jaeger.traces(service=service, operation="watch.event")
        for span in found.named("watch.event")
        if span.tags.get("k8s.object.name") == object_name
    ]
    unique = {span.span_id: span for span in spans}
    return sorted(unique.values(), key=lambda s: s.start)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(operator: OperatorProcess) -> Samples:
    """Every sample of the operator's /metrics, keyed (sample name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels or ''} in /metrics"
    return samples[key]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def json_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    """The operator's log (``--log-format=json``) parsed; every line must be one JSON object."""
    records = []
    for number, line in enumerate(operator.logs().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line {number} is not JSON: {line[:300]}")
        assert isinstance(record, dict), f"log line {number} is not a JSON object: {line[:300]}"
        records.append(record)
    return records


def next_trigger_deadline(kube: Kube, name: str) -> float:
    """Seconds from now until the CTJ's ``status.nextTriggerTime`` (which must be set)."""
    stamp = until(lambda: (kube.ctj(name).get("status") or {}).get("nextTriggerTime"), what="nextTriggerTime")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - datetime.now(UTC).timestamp()


# --------------------------------------------------------------------------------------------------
# Traces


def test_one_trace_from_watch_event_to_job(kube: Kube, traced: Traced, jaeger: Jaeger) -> None:
    kube.run("create", "configmap", "app-config", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("nightly", [configmap_ref(kube, "app-config")], cooldown="0s"))
    wait_until(baseline_recorded(kube, "nightly"), what="baseline")
    kube.patch("configmap", "app-config", {"data": {"k": "1"}})
    job = wait_jobs(kube, "nightly", 1)[0]
    job_name = job["metadata"]["name"]
    trace_id, trigger_span_id = job_trace(job)

    # Found the way a user searches: by service and operation, then the Job's trace id.
    def searched() -> Trace | None:
        hits = [t for t in jaeger.traces(service=traced.service, operation="ctj.trigger") if t.trace_id == trace_id]
        return hits[0] if hits else None

    until(searched, what=f"trace {trace_id} in a search for service {traced.service}")
    found = stored_trace(
        jaeger, trace_id, needs=("watch.event", "ctj.trigger", "POST jobs", "PUT changetriggeredjobs/status")
    )
    assert found.services == {traced.service}

    watch = found.one("watch.event")
    assert watch.parent is None, "the watch event starts the trace"
    assert watch.kind == "consumer"
    assert watch.tags["k8s.resource.kind"] == "ConfigMap"
    assert watch.tags["k8s.resource.api_version"] == "v1"
    assert watch.tags["k8s.namespace.name"] == kube.ns
    assert watch.tags["k8s.object.name"] == "app-config"
    assert watch.tag_list("changejob.ctjs") == [f"{kube.ns}/nightly"]

    trigger = found.one("ctj.trigger")
    assert trigger.span_id == trigger_span_id, "the Job's traceparent names the ctj.trigger span"
    assert trigger.parent == watch.span_id
    assert trigger.links == set()
    assert trigger.tags["changejob.ctj"] == "nightly"
    assert trigger.tags["k8s.namespace.name"] == kube.ns
    assert trigger.tags["changejob.trigger.sequence"] == 1
    assert trigger.start >= watch.start

    create = found.one("POST jobs", parent=trigger.span_id)
    assert create.kind == "client"
    assert create.tags["http.request.method"] == "POST"
    assert create.tags["k8s.resource"] == "jobs"
    assert create.tags["k8s.namespace.name"] == kube.ns
    assert create.tags["k8s.object.name"] == job_name
    assert "error.type" not in create.tags

    status = found.one("PUT changetriggeredjobs/status", parent=trigger.span_id)
    assert status.kind == "client"
    assert status.tags["k8s.object.name"] == "nightly"
    assert status.start >= create.start, "the status records the Job, so it is written after it"


def test_changes_during_cooldown_are_links_on_the_deferred_trigger(kube: Kube, traced: Traced, jaeger: Jaeger) -> None:
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("cool", [configmap_ref(kube, "cfg")], cooldown=f"{COOLDOWN}s"))
    wait_until(baseline_recorded(kube, "cool"), what="baseline")
    kube.patch("configmap", "cfg", {"data": {"k": "1"}})
    first_job = wait_jobs(kube, "cool", 1)[0]
    seen_first_job = time.monotonic()
    for k in ("2", "3", "4"):  # inside the cooldown the first Job started
        kube.patch("configmap", "cfg", {"data": {"k": k}})
    # The cooldown runs from lastTriggeredTime, which has whole seconds: at least COOLDOWN - 1 s.
    took = time.monotonic() - seen_first_job
    assert took < COOLDOWN - 2, f"the three changes took {took:.1f}s: too slow to be sure they fell in the cooldown"
    jobs = wait_jobs(kube, "cool", 2)
    first_trace = stored_trace(jaeger, job_trace(first_job)[0], needs=("watch.event", "ctj.trigger"))
    first_watch = first_trace.one("watch.event")
    trace_id, span_id = job_trace(jobs[1])
    deferred = stored_trace(jaeger, trace_id, needs=("watch.event", "ctj.trigger", "POST jobs"))
    trigger = deferred.one("ctj.trigger")
    assert trigger.span_id == span_id

    # The watch events of the three coalesced changes: those after the first trigger's.
    def coalesced() -> list[Span] | None:
        later = [
            s for s in watch_events(jaeger, service=traced.service, object_name="cfg") if s.start > first_watch.start
        ]
        return later if len(later) >= 3 else None

    changes = until(coalesced, what="three watch.event spans after the first trigger")
    assert len(changes) == 3, f"one watch event per change expected, got {[(s.span_id, s.start) for s in changes]}"
    described = f"ctj.trigger parent {trigger.parent}, links {sorted(trigger.links)}; watch.event spans of the "
    described += f"three changes, oldest first: {[s.span_id for s in changes]}"
    assert trigger.parent == changes[0].span_id, f"the first change must be the parent: {described}"
    assert trigger.links == {(s.trace_id, s.span_id) for s in changes[1:]}, (
        f"the later changes must be span links (FOLLOWS_FROM): {described}"
    )
    assert trigger.tags["changejob.coalesced_changes"] == 2


def test_condition_all_links_every_resource_that_changed(kube: Kube, traced: Traced, jaeger: Jaeger) -> None:
    names = ["cfg-a", "cfg-b", "cfg-c"]
    for name in names:
        kube.run("create", "configmap", name, "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("all", [configmap_ref(kube, n) for n in names], cooldown="0s", condition_="All"))
    wait_until(baseline_recorded(kube, "all"), what="baseline")
    since = time.time_ns() // 1000  # Jaeger's timestamps: microseconds since the epoch
    for name in names[:-1]:
        kube.patch("configmap", name, {"data": {"k": "1"}})
        # One at a time, so that the order of the watch events is the order of the patches.
        wait_until(functools.partial(resource_changed, kube, "all", name), what=f"{name} seen as changed")
    assert kube.jobs("all") == [], "no Job before every resource changed"
    kube.patch("configmap", names[-1], {"data": {"k": "1"}})
    job = wait_jobs(kube, "all", 1)[0]
    trace_id, _ = job_trace(job)
    found = stored_trace(jaeger, trace_id, needs=("watch.event", "ctj.trigger", "POST jobs"))
    trigger = found.one("ctj.trigger")

    def changes_of(name: str) -> list[Span]:
        return [s for s in watch_events(jaeger, service=traced.service, object_name=name) if s.start >= since]

    latest = [until(functools.partial(changes_of, name), what=f"the watch.event of {name}'s change") for name in names]
    assert all(len(spans) == 1 for spans in latest), f"one change each: {latest}"
    changes = [spans[0] for spans in latest]
    assert trigger.parent == changes[0].span_id
    assert found.one("watch.event").span_id == changes[0].span_id
    assert trigger.links == {(s.trace_id, s.span_id) for s in changes[1:]}
    assert all(s.trace_id != trace_id for s in changes[1:]), "linked changes lead to traces of their own"
    assert trigger.tags["changejob.coalesced_changes"] == 2


# --------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_count_what_happened(kube: Kube, untraced: OperatorProcess) -> None:
    for name in ("often", "rarely"):
        kube.run("create", "configmap", name, "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("often", [configmap_ref(kube, "often")], cooldown="0s", history=1))
    kube.apply(ctj_body("rarely", [configmap_ref(kube, "rarely")], cooldown="1h"))
    wait_until(baseline_recorded(kube, "often"), what="baseline of often")
    wait_until(baseline_recorded(kube, "rarely"), what="baseline of rarely")
    wait_until(lambda: value(scrape(untraced), "changejob_ctjs") == 2, what="changejob_ctjs 2")
    before = scrape(untraced)

    # often: two triggers, history 1; rarely: one trigger, then a change inside its cooldown.
    for sequence in (1, 2):
        kube.patch("configmap", "often", {"data": {"k": str(sequence)}})
        wait_until(functools.partial(highest_sequence_is, kube, "often", sequence), what=f"Job {sequence} of often")
    kube.patch("configmap", "rarely", {"data": {"k": "1"}})
    wait_jobs(kube, "rarely", 1)
    kube.patch("configmap", "rarely", {"data": {"k": "2"}})
    assert next_trigger_deadline(kube, "rarely") > 60
    jobs_made = 3

    def pruned() -> Samples | None:
        now = scrape(untraced)
        return now if delta(before, now, "changejob_jobs_pruned_total") >= 1 else None

    after = until(pruned, what="changejob_jobs_pruned_total to increase (history 1, two Jobs)", timeout=60)
    assert [j["metadata"]["annotations"]["changejob.dev/trigger"] for j in kube.jobs("often")] == ["2"]
    assert delta(before, after, "changejob_jobs_pruned_total") == 1
    assert delta(before, after, "changejob_triggers_total", result="created") == jobs_made
    assert delta(before, after, "changejob_jobs_created_total") == jobs_made
    assert delta(before, after, "changejob_change_to_job_seconds_count") == jobs_made
    assert delta(before, after, "changejob_change_to_job_seconds_sum") > 0
    assert delta(before, after, "changejob_triggers_total", result="deferred") == 1
    assert delta(before, after, "changejob_triggers_total", result="skipped") == 0
    assert value(after, "changejob_watch_streams") >= 1
    assert value(after, "changejob_ctjs") == 2
    assert value(after, "changejob_watched_objects") == 2, "two ConfigMaps are watched"
    assert delta(before, after, "changejob_watch_events_total", type="MODIFIED") >= 4
    assert delta(before, after, "changejob_status_writes_total", result="ok") >= jobs_made
    assert value(after, "changejob_leader") == 1
    # Labels never name CTJs, namespaces or objects.
    names = {"often", "rarely", kube.ns}
    labelled = {v for (_, labels) in after for (_, v) in labels}
    assert not labelled & names, f"labels carry names: {labelled & names}"


def test_deferred_latency_counts_from_the_first_change(kube: Kube, untraced: OperatorProcess) -> None:
    """``change_to_job_seconds`` of a deferred trigger runs from the first change it covers."""
    kube.run("create", "configmap", "cfg", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("cool", [configmap_ref(kube, "cfg")], cooldown=f"{COOLDOWN}s"))
    wait_until(baseline_recorded(kube, "cool"), what="baseline")
    kube.patch("configmap", "cfg", {"data": {"k": "1"}})
    wait_jobs(kube, "cool", 1)
    before = scrape(untraced)
    kube.patch("configmap", "cfg", {"data": {"k": "2"}})
    first_change = time.monotonic()  # the PATCH has answered: the watch event follows within moments
    left = next_trigger_deadline(kube, "cool")
    assert left > 2.5, f"too little of the cooldown left ({left:.1f}s) for a later change"
    time.sleep(left - 1.5)
    last_change = time.monotonic()
    kube.patch("configmap", "cfg", {"data": {"k": "3"}})
    wait_jobs(kube, "cool", 2)

    def sampled() -> Samples | None:
        now = scrape(untraced)
        return now if delta(before, now, "changejob_change_to_job_seconds_count") >= 1 else None

    after = until(sampled, what="the deferred Job's latency sample")
    assert delta(before, after, "changejob_change_to_job_seconds_count") == 1
    latency = delta(before, after, "changejob_change_to_job_seconds_sum")
    # The Job came after the last change, so from the first change it took at least the time between
    # the two (less a little for the watch event's delivery after the PATCH answered).
    assert latency >= last_change - first_change - 0.3, (
        f"latency {latency:.2f}s is shorter than the {last_change - first_change:.2f}s between the first "
        "and the last change the deferred Job covers"
    )


# --------------------------------------------------------------------------------------------------
# Secrets


def test_secret_values_never_leak(kube: Kube, traced: Traced, jaeger: Jaeger) -> None:
    planted = [f"leak-canary-{secrets.token_hex(16)}" for _ in range(2)]
    kube.run("create", "secret", "generic", "creds", "-n", kube.ns, f"--from-literal=token={planted[0]}")
    secret_ref = {"apiVersion": "v1", "kind": "Secret", "name": "creds", "namespace": kube.ns}
    kube.apply(ctj_body("rotate", [secret_ref], cooldown="0s"))  # the whole Secret, data included
    kube.apply(ctj_body("rotate-data", [{**secret_ref, "fields": ["data.token"]}], cooldown="0s"))
    for name in ("rotate", "rotate-data"):
        wait_until(baseline_recorded(kube, name), what=f"baseline of {name}")
    encoded = base64.b64encode(planted[1].encode()).decode()
    kube.patch("secret", "creds", {"data": {"token": encoded}})
    for name in ("rotate", "rotate-data"):
        job = wait_jobs(kube, name, 1)[0]
        stored_trace(jaeger, job_trace(job)[0], needs=("watch.event", "ctj.trigger", "POST jobs"))

    places = {
        "operator log": traced.operator.logs(),
        "CTJs": kube.run("get", "changetriggeredjobs", "-n", kube.ns, "-o", "yaml").stdout,
        "Events": kube.run("get", "events", "-n", kube.ns, "-o", "yaml").stdout,
        "Jobs": kube.run("get", "jobs", "-n", kube.ns, "-o", "yaml").stdout,
        "traces": jaeger.raw_traces(service=traced.service),
    }
    # The places are the right ones: each of them speaks of the Secret or its change.
    assert "creds" in places["operator log"]
    assert "Secret/" in places["Jobs"] and "Secret/" in places["Events"]
    assert '"creds"' in places["traces"]
    assert "resourceHashes" in places["CTJs"]
    for value_ in planted:
        forms = {value_, base64.b64encode(value_.encode()).decode(), value_.encode().hex()}
        for where, text in places.items():
            leaked = [form for form in forms if form in text]
            assert not leaked, f"the Secret's value appears in the {where} (as {leaked})"


# --------------------------------------------------------------------------------------------------
# Logs


def test_log_lines_name_the_ctj_and_carry_the_trace(kube: Kube, traced: Traced, jaeger: Jaeger) -> None:
    kube.run("create", "configmap", "app-config", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("nightly", [configmap_ref(kube, "app-config")], cooldown="0s"))
    wait_until(baseline_recorded(kube, "nightly"), what="baseline")
    kube.patch("configmap", "app-config", {"data": {"k": "1"}})
    job = wait_jobs(kube, "nightly", 1)[0]
    trace_id, trigger_span_id = job_trace(job)
    job_name = job["metadata"]["name"]
    qualified = f"{kube.ns}/nightly"

    records = until(
        lambda: (
            [r for r in json_lines(traced.operator) if job_name in r.get("msg", "")] and json_lines(traced.operator)
        ),
        what=f"a log line about {job_name}",
    )
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= record.keys(), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"]), record
    # The operator's own lines (libraries such as urllib3 log request lines that cannot know the CTJ).
    ours = [r for r in records if r["logger"].split(".")[0] == "changejob"]
    about = [r for r in ours if "nightly" in r["msg"] or r.get("ctj") == qualified]
    assert about, "no log line about the CTJ"
    unnamed = [r for r in about if r.get("ctj") != qualified]
    assert not unnamed, f"log lines about the CTJ without ctj={qualified}: {unnamed}"

    created = [r for r in about if r["msg"].startswith(f"created job {job_name}")]
    assert len(created) == 1, about
    assert created[0]["level"] == "info"
    assert created[0]["trace_id"] == trace_id, "the line is written inside the trigger's trace"
    assert created[0]["span_id"] == trigger_span_id
    for record in records:
        if "trace_id" in record:
            assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]), record
            assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"]), record
    # The span the line names is in Jaeger.
    found = stored_trace(jaeger, trace_id, needs=("ctj.trigger",))
    assert found.one("ctj.trigger").span_id == created[0]["span_id"]


def test_log_lines_carry_no_trace_ids_when_tracing_is_off(kube: Kube, untraced: OperatorProcess) -> None:
    kube.run("create", "configmap", "app-config", "-n", kube.ns, "--from-literal=k=0")
    kube.apply(ctj_body("nightly", [configmap_ref(kube, "app-config")], cooldown="0s"))
    wait_until(baseline_recorded(kube, "nightly"), what="baseline")
    kube.patch("configmap", "app-config", {"data": {"k": "1"}})
    job = wait_jobs(kube, "nightly", 1)[0]
    assert "traceparent" not in (job["metadata"].get("annotations") or {})
    created = until(
        lambda: [r for r in json_lines(untraced) if r["msg"].startswith("created job")],
        what="the 'created job' log line",
    )
    assert created[0]["ctj"] == f"{kube.ns}/nightly"
    assert not [r for r in json_lines(untraced) if "trace_id" in r or "span_id" in r]


# --------------------------------------------------------------------------------------------------
# Probes


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.read().decode())


def test_probes_answer_and_list_their_checks(untraced: OperatorProcess) -> None:
    status, body = _get(untraced.probe_port, "/healthz")
    assert status == 200, body
    lines = body.splitlines()
    assert lines[-1] == "healthz check passed"
    assert "[+]workers ok" in lines[:-1]
    assert all(re.fullmatch(r"\[\+\][a-z-]+ ok", line) for line in lines[:-1]), lines

    status, body = _get(untraced.probe_port, "/readyz")
    assert status == 200, body
    lines = body.splitlines()
    checks = lines[:-1]
    assert lines[-1] == "readyz check passed"
    assert checks == sorted(checks), "checks are listed in name order"
    assert {"[+]ctjs-synced ok", "[+]jobs-synced ok", "[+]shards-joined ok", "[+]watches-synced ok"} <= set(checks)
    assert all(re.fullmatch(r"\[\+\][a-z-]+ ok", line) for line in checks), checks

    # Each address serves its own endpoints only.
    assert _get(untraced.probe_port, "/metrics")[0] == 404
    assert _get(untraced.metrics_port, "/healthz")[0] == 404
    status, body = _get(untraced.metrics_port, "/metrics")
    assert status == 200 and "changejob_ctjs" in body
