"""What tracing costs: change→Job latency with tracing on (Jaeger running, every trace sampled) vs off.

Usage::

    .venv/bin/python benchmarks/tracing_overhead.py [--kubeconfig PATH | --cluster NAME]
        [--ctjs 50] [--samples 50] [--rounds 4] [--spacing 0.25] [--keep-cluster]

One run, one fresh namespace with ``--ctjs`` CTJs (``cooldown: 0s``), each watching a ConfigMap of its
own, created while the first operator runs. The operator (``kube-changejob run``) is started
alternately without and with tracing, in ``--rounds`` rounds (off, on; then on, off; ...), so that a
drift of the machine's load during the run touches both sides alike. In each block it first answers a
few warm-up changes (not counted), then ``--samples / --rounds`` measured ones: PATCH a random
ConfigMap, time from the PATCH's answer to the Job's ADDED event on the benchmark's own Job watch.

With tracing on the operator exports OTLP/HTTP to a Jaeger started from ``.tools/bin/jaeger`` with
``tools/jaeger.yaml`` on free loopback ports, with ``OTEL_TRACES_SAMPLER=always_on`` and the SDK's
default batching; at the end the benchmark checks that Jaeger holds a ``ctj.trigger`` trace per
change, so the "on" side really traced.

Printed: p50/p95/mean per side, the operator's own mean (``changejob_change_to_job_seconds``: from
the watch event's arrival to the Job's creation, without the API server's share), the on/off ratios
(the goal is an overhead below 10 %), the operator's CPU time per change, and the noise floor: the
ratio between the fastest and the slowest "off" block of the same run (p50).
Written: ``benchmarks/results/tracing-overhead-<UTC time>.json`` and the operators' and Jaeger's logs
next to it. Nothing asserts on the figures.

The cluster: ``--kubeconfig`` names one that is used as it is; otherwise ``tools/cluster.sh up NAME``
boots (or reuses) a local kwok cluster, deleted at the end if this run created it (unless
``--keep-cluster``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "operator"))

import common  # noqa: E402
from bench_client import Api  # noqa: E402
from jobwatch import JobWatch  # noqa: E402
from opproc import Operator, free_port  # noqa: E402

REPO = HERE.parent
CLUSTER_SH = REPO / "tools" / "cluster.sh"
CRD = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
JAEGER_BIN = REPO / ".tools" / "bin" / "jaeger"
JAEGER_CONFIG = REPO / "tools" / "jaeger.yaml"
CTJ_API = "triggers.changejob.dev/v1alpha"
WARM_UP = 3  # changes answered before a block's measured samples
GOAL_OVERHEAD = 0.10
HISTOGRAM = "changejob_change_to_job_seconds"  # the operator's own view: watch event in -> Job created


@dataclasses.dataclass(frozen=True)
class Config:
    ctjs: int = 50
    samples: int = 50  # per side
    rounds: int = 4
    spacing: float = 0.25
    cluster: str = "changejob-tracing"
    kubeconfig: str | None = None
    keep_cluster: bool = False
    seed: int = 20250101


# --------------------------------------------------------------------------------------------------
# Cluster, namespace and workload


@contextlib.contextmanager
def cluster(cfg: Config) -> Iterator[str]:
    """The kubeconfig of the cluster to use; a cluster booted here is deleted afterwards."""
    if cfg.kubeconfig:
        yield cfg.kubeconfig
        return
    existed = subprocess.run([str(CLUSTER_SH), "check", cfg.cluster], capture_output=True, check=False).returncode == 0
    subprocess.run([str(CLUSTER_SH), "up", cfg.cluster], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(CLUSTER_SH), "kubeconfig", cfg.cluster], check=True, capture_output=True, text=True)
    try:
        yield out.stdout.strip()
    finally:
        if not existed and not cfg.keep_cluster:
            subprocess.run([str(CLUSTER_SH), "down", cfg.cluster], check=False, stdout=subprocess.DEVNULL)


def configmap(i: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cfg-{i:03d}", "namespace": namespace},
        "data": {"app.properties": f"server.port=8080\nshard={i}\n", "rev": "0"},
    }


def ctj(i: int, namespace: str) -> dict[str, Any]:
    container = {"name": "job", "image": "busybox:latest", "command": ["true"]}
    return {
        "apiVersion": CTJ_API,
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": f"ctj-{i:03d}", "namespace": namespace},
        "spec": {
            "cooldown": "0s",
            "history": 2,
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": f"cfg-{i:03d}", "namespace": namespace}],
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {"spec": {"containers": [container], "restartPolicy": "Never"}},
                }
            },
        },
    }


def ctj_collection(namespace: str) -> str:
    return f"/apis/triggers.changejob.dev/v1alpha/namespaces/{namespace}/changetriggeredjobs"


def prepare(api: Api, *, namespace: str, count: int) -> None:
    """The CRD, the namespace and its ConfigMaps (the CTJs come once an operator runs)."""
    api.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    api.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/changetriggeredjobs.triggers.changejob.dev"
    )
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    api.create_many([(f"/api/v1/namespaces/{namespace}/configmaps", configmap(i, namespace)) for i in range(count)])


def not_baselined(api: Api, *, namespace: str) -> dict[str, str]:
    """CTJs without a recorded baseline, with their Ready condition's message."""
    waiting = {}
    for item in api.list_all(ctj_collection(namespace)):
        status = item.get("status") or {}
        entries = status.get("resourceHashes") or []
        if not entries or not all(e.get("lastTriggeredHash") for e in entries):
            ready = [c for c in status.get("conditions") or () if c.get("type") == "Ready"]
            waiting[item["metadata"]["name"]] = ready[0].get("message", "") if ready else "no status yet"
    return waiting


def wait_baselined(api: Api, *, namespace: str, op: Operator, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while waiting := not_baselined(api, namespace=namespace):
        if time.monotonic() > deadline:
            sample = dict(list(waiting.items())[:5])
            raise TimeoutError(
                f"{len(waiting)} CTJs have no baseline after {timeout:.0f}s (e.g. {sample}); see {op.log_path}"
            )
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------------
# Jaeger


class Jaeger:
    """Jaeger with ``tools/jaeger.yaml`` on free loopback ports; its log goes to ``log_path``."""

    def __init__(self, *, log_path: Path) -> None:
        self.otlp_port, self.query_port, grpc_port = free_port(), free_port(), free_port()
        self.log_path = log_path
        env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        env.update(
            JAEGER_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{self.otlp_port}",
            JAEGER_QUERY_HTTP_ENDPOINT=f"127.0.0.1:{self.query_port}",
            JAEGER_QUERY_GRPC_ENDPOINT=f"127.0.0.1:{grpc_port}",
        )
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(JAEGER_BIN), "--config", str(JAEGER_CONFIG)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 30
        while self.query("/api/services") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Jaeger did not start; see {log_path}")
            time.sleep(0.1)

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def query(self, path: str, **params: str | int) -> Any:
        url = f"http://127.0.0.1:{self.query_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return orjson.loads(resp.read())
        except (OSError, urllib.error.HTTPError):
            return None

    def trigger_traces(self, service: str) -> int:
        """How many traces of ``service`` contain a ``ctj.trigger`` span."""
        found = self.query("/api/traces", service=service, operation="ctj.trigger", limit=100_000, lookback="2h")
        return len((found or {}).get("data") or [])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the operator started inside."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tracing_env(*, on: bool, jaeger: Jaeger, service: str) -> dict[str, str | None]:
    """The operator's OTEL_* environment: everything cleared, then what this side needs."""
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("OTEL_")}
    if on:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_endpoint,
            OTEL_SERVICE_NAME=service,
            OTEL_TRACES_SAMPLER="always_on",
        )
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    return env


class Sampler:
    """Changes ConfigMaps and times the Jobs that follow them."""

    def __init__(self, *, api: Api, jw: JobWatch, namespace: str, cfg: Config) -> None:
        self.api = api
        self.jw = jw
        self.ns = namespace
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.revision = 0

    def one(self) -> float | None:
        """Seconds from a PATCH's answer to its Job's ADDED event; None if no Job came in 30 s."""
        i = self.rng.randrange(self.cfg.ctjs)
        owner = f"ctj-{i:03d}"
        before = self.jw.count(owner)
        self.revision += 1
        self.api.patch(f"/api/v1/namespaces/{self.ns}/configmaps/cfg-{i:03d}", {"data": {"rev": str(self.revision)}})
        answered = time.monotonic()
        arrived = self.jw.wait_for(owner, after_count=before, timeout=30.0)
        return None if arrived is None else arrived - answered

    def block(self, op: Operator, count: int) -> dict[str, Any]:
        for _ in range(WARM_UP):
            self.one()
            time.sleep(self.cfg.spacing)
        latencies: list[float] = []
        lost = 0
        m0 = op.metrics()
        cpu0 = op.cpu_seconds()
        for _ in range(count):
            value = self.one()
            if value is None:
                lost += 1
            else:
                latencies.append(value)
            time.sleep(self.cfg.spacing)
        cpu = op.cpu_seconds() - cpu0
        m1 = op.metrics()
        inside = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in (f"{HISTOGRAM}_sum", f"{HISTOGRAM}_count")}
        return {
            "samples": latencies,
            "lost": lost,
            "cpu_seconds": cpu,
            "changes": count,
            "operator_latency_seconds_sum": inside[f"{HISTOGRAM}_sum"],
            "operator_latency_count": inside[f"{HISTOGRAM}_count"],
        }


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    """The whole benchmark; returns the results (also the JSON written by ``main``)."""
    namespace = f"tracing-bench-{secrets.token_hex(3)}"
    blocks: list[dict[str, Any]] = []
    jaeger = Jaeger(log_path=workdir / "jaeger.log")
    bench: Bench | None = None
    try:
        with cluster(cfg) as kubeconfig:
            api = Api(kubeconfig=kubeconfig)
            common.log(f"namespace {namespace}: {cfg.ctjs} ConfigMaps and CTJs")
            prepare(api, namespace=namespace, count=cfg.ctjs)
            rv = api.list_rv(f"/apis/batch/v1/namespaces/{namespace}/jobs")
            jw = JobWatch(t=api.t, namespace=namespace, resource_version=rv)
            jw.start()
            bench = Bench(cfg=cfg, api=api, jw=jw, jaeger=jaeger, namespace=namespace, workdir=workdir)
            try:
                for r in range(cfg.rounds):
                    for on in (False, True) if r % 2 == 0 else (True, False):
                        blocks.append(bench.block(on=on, round_=r))
            finally:
                jw.stop()
                api.t.request("DELETE", f"/api/v1/namespaces/{namespace}")
    finally:
        traces = jaeger.trigger_traces(bench.service) if bench is not None else 0
        jaeger.stop()
    return summarise(cfg, blocks, traces=traces, namespace=namespace)


class Bench:
    """One namespace, its CTJs, and operators started in turn with and without tracing."""

    def __init__(self, *, cfg: Config, api: Api, jw: JobWatch, jaeger: Jaeger, namespace: str, workdir: Path) -> None:
        self.cfg = cfg
        self.api = api
        self.jaeger = jaeger
        self.ns = namespace
        self.workdir = workdir
        self.service = f"kube-changejob-bench-{namespace}"
        self.sampler = Sampler(api=api, jw=jw, namespace=namespace, cfg=cfg)
        self.per_block = -(-cfg.samples // cfg.rounds)  # rounded up: at least --samples per side
        self.ctjs_created = False

    def create_ctjs(self, op: Operator) -> None:
        """The CTJs, while ``op`` runs: the first alone, the others once its baseline is recorded."""
        path = ctj_collection(self.ns)
        self.api.create(path, ctj(0, self.ns))
        wait_baselined(self.api, namespace=self.ns, op=op)
        self.api.create_many([(path, ctj(i, self.ns)) for i in range(1, self.cfg.ctjs)])
        self.ctjs_created = True

    def block(self, *, on: bool, round_: int) -> dict[str, Any]:
        """Start an operator (tracing ``on`` or off), measure, stop it."""
        side = "on" if on else "off"
        op = Operator(
            kubeconfig=self.api.kubeconfig,
            namespace=self.ns,
            logdir=self.workdir,
            identity=f"tracing-{side}-{round_}",
            extra=("--log-level=info",),  # one line per Job: enough to explain a stuck run, cheap
        )
        with environment(tracing_env(on=on, jaeger=self.jaeger, service=self.service)):
            op.start()
        try:
            ready = op.wait_ready()
            if not self.ctjs_created:
                self.create_ctjs(op)
            wait_baselined(self.api, namespace=self.ns, op=op)
            op.settle(quiet=2.0, expect_ctjs=self.cfg.ctjs)
            result = self.sampler.block(op, self.per_block)
        finally:
            op.stop()
        stats = common.summary(result["samples"])
        common.log(
            f"round {round_ + 1}, tracing {side}: ready {ready:.1f}s, p50 {stats['p50'] * 1000:.1f} ms, "
            f"p95 {stats['p95'] * 1000:.1f} ms, {result['lost']} lost"
        )
        return {"tracing": on, "round": round_, "ready_seconds": ready, **result}


def summarise(cfg: Config, blocks: list[dict[str, Any]], *, traces: int, namespace: str) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    for side, on in (("off", False), ("on", True)):
        mine = [b for b in blocks if b["tracing"] is on]
        samples = [s for b in mine for s in b["samples"]]
        changes = sum(b["changes"] for b in mine)
        inside_n = sum(b["operator_latency_count"] for b in mine)
        sides[side] = {
            "latency": common.summary(samples),
            "operator_mean_seconds": sum(b["operator_latency_seconds_sum"] for b in mine) / inside_n
            if inside_n
            else None,
            "lost": sum(b["lost"] for b in mine),
            "cpu_ms_per_change": 1000 * sum(b["cpu_seconds"] for b in mine) / changes if changes else None,
            "samples": samples,
        }
    off, on_ = sides["off"]["latency"], sides["on"]["latency"]
    offs = [common.summary(b["samples"])["p50"] for b in blocks if not b["tracing"]]
    changes_on = sum(b["changes"] + WARM_UP for b in blocks if b["tracing"])
    return {
        "config": dataclasses.asdict(cfg),
        "namespace": namespace,
        "blocks": [{k: v for k, v in b.items() if k != "samples"} for b in blocks],
        "off": sides["off"],
        "on": sides["on"],
        "p50_ratio": common.ratio(on_["p50"], off["p50"]),
        "p95_ratio": common.ratio(on_["p95"], off["p95"]),
        "mean_ratio": common.ratio(on_["mean"], off["mean"]),
        "cpu_ratio": common.ratio(sides["on"]["cpu_ms_per_change"], sides["off"]["cpu_ms_per_change"]),
        "operator_mean_ratio": common.ratio(
            sides["on"]["operator_mean_seconds"], sides["off"]["operator_mean_seconds"]
        ),
        "noise_p50_ratio_between_off_blocks": common.ratio(max(offs), min(offs)) if len(offs) > 1 else None,
        "goal_overhead": GOAL_OVERHEAD,
        "traces_in_jaeger": traces,
        "changes_traced": changes_on,
    }


def tables(results: Mapping[str, Any]) -> list[str]:
    """The printed report (also usable by a caller that embeds this benchmark)."""
    rows = []
    for side in ("off", "on"):
        lat = results[side]["latency"]
        rows.append(
            [
                f"tracing {side}",
                lat["n"],
                lat["p50"] * 1000,
                lat["p95"] * 1000,
                lat["mean"] * 1000,
                None
                if results[side]["operator_mean_seconds"] is None
                else results[side]["operator_mean_seconds"] * 1000,
                results[side]["cpu_ms_per_change"],
                results[side]["lost"],
            ]
        )
    p50 = results["p50_ratio"]
    verdict = "-" if p50 is None else ("met" if p50 - 1 < results["goal_overhead"] else "missed")
    ratios = [results[key] for key in ("p50_ratio", "p95_ratio", "mean_ratio", "operator_mean_ratio", "cpu_ratio")]
    rows.append(["on / off", "", *("-" if r is None else f"{r:.2f}" for r in ratios), ""])
    out = [
        common.table(
            "Change→Job latency, tracing off vs on (ms; ratios in the last row)",
            ["side", "n", "p50", "p95", "mean", "operator mean", "CPU ms/change", "lost"],
            rows,
        )
    ]
    noise = results["noise_p50_ratio_between_off_blocks"]
    out.append(
        f"\noverhead (p50): {'-' if p50 is None else f'{(p50 - 1) * 100:+.1f} %'}, goal < "
        f"{results['goal_overhead'] * 100:.0f} %: {verdict}; noise floor (p50 of the off blocks, max/min): "
        f"{'-' if noise is None else f'{noise:.2f}'}; traces in Jaeger: {results['traces_in_jaeger']} "
        f"for {results['changes_traced']} traced changes"
    )
    return out


def parse(argv: list[str]) -> Config:
    defaults = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ctjs", type=int, default=defaults.ctjs, help="CTJs (and ConfigMaps) in the namespace")
    p.add_argument("--samples", type=int, default=defaults.samples, help="measured changes per side")
    p.add_argument("--rounds", type=int, default=defaults.rounds, help="off/on alternations the samples are split in")
    p.add_argument("--spacing", type=float, default=defaults.spacing, help="seconds between changes")
    p.add_argument("--kubeconfig", help="use this cluster as it is instead of booting one")
    p.add_argument("--cluster", default=defaults.cluster, help="name of the local cluster to boot or reuse")
    p.add_argument("--keep-cluster", action="store_true", help="do not delete a cluster this run booted")
    p.add_argument("--seed", type=int, default=defaults.seed)
    a = p.parse_args(argv)
    if a.rounds < 1 or a.samples < a.rounds or a.ctjs < 1:
        p.error("need --ctjs >= 1, --rounds >= 1 and --samples >= --rounds")
    return Config(
        ctjs=a.ctjs,
        samples=a.samples,
        rounds=a.rounds,
        spacing=a.spacing,
        cluster=a.cluster,
        kubeconfig=a.kubeconfig,
        keep_cluster=a.keep_cluster,
        seed=a.seed,
    )


def main(argv: list[str]) -> int:
    cfg = parse(argv)
    if not JAEGER_BIN.exists():
        common.log(f"{JAEGER_BIN} is missing; build it with `tools/build.sh jaeger`")
        return 2
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"tracing-overhead-{stamp}"
    workdir = common.RESULTS / name
    workdir.mkdir(parents=True, exist_ok=True)
    info = common.machine()
    common.emit(common.machine_line(info))
    results = {"machine": info, **run(cfg, workdir)}
    for text in tables(results):
        common.emit(text)
    path = common.write_results(name, results)
    common.emit(f"\nresults: {path} (logs in {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
