"""Cluster benchmarks: the operator against a dedicated local control plane, at growing CTJ counts.

One run, sizes ascending (objects and CTJs are added, never recreated):

1. populate: create the watched objects and CTJs for this size while the operator runs, then wait
   until every CTJ has its baseline recorded (``status.resourceHashes[].lastTriggeredHash``);
2. idle: API requests per minute, CPU and RSS of the long-running process with nothing changing;
3. background: stop the operator (SIGTERM) and count the control plane's own requests for a while;
4. restart: start it again: time to ``/readyz`` 200, time until it is quiet, Jobs created, API
   requests made and RSS of the fresh process;
5. latency: PATCH a watched ConfigMap, time until the Job is visible to the benchmark's Job watch;
   interleaved with the same for the baseline client (``limit_client.py``);
6. burst (at one size): 1 000 changes at once, for the operator and then for the baseline client;
7. HA (after the largest size): 1 and 3 replicas with ``--leader-elect=true``.

The operator authenticates as a ServiceAccount of its own (bound to ``cluster-admin``: RBAC is not
what is measured here) so that its requests can be told apart exactly (see ``apiserver.py``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apiserver
import workload
from bench_client import REPO, Api
from changejob.domain import jobs
from common import growth_exponent, log, ratio, summary
from jobwatch import JobWatch
from opproc import Operator

CLUSTER_SH = REPO / "tools" / "cluster.sh"
CRD = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
SERVICE_ACCOUNT = "kube-changejob"


@dataclasses.dataclass
class Config:
    sizes: tuple[int, ...] = (100, 1000, 10000)
    samples: int = 60
    spacing: float = 0.6  # 60 samples x 2 sides span more than one 60 s resync
    idle_small: float = 120.0
    idle_large: float = 300.0  # at sizes >= large_from
    large_from: int = 10000
    background: float = 30.0
    burst: int = 1000
    burst_at: int = 1000
    ha: bool = True
    memory_only: bool = False  # per size only populate, idle, background and restart
    ha_idle: float = 65.0
    cluster: str = "changejob-bench"
    namespace: str = "changejob-bench"
    keep_cluster: bool = False
    seed: int = 20250101

    def idle_for(self, size: int) -> float:
        return self.idle_large if size >= self.large_from else self.idle_small


# --------------------------------------------------------------------------------------------------
# Setup


def cluster_up(name: str) -> str:
    subprocess.run([str(CLUSTER_SH), "up", name], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(CLUSTER_SH), "kubeconfig", name], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cluster_down(name: str) -> None:
    subprocess.run([str(CLUSTER_SH), "down", name], check=False, stdout=subprocess.DEVNULL)


def operator_kubeconfig(api: Api, *, namespace: str, path: Path) -> str:
    """A kubeconfig for the operator's ServiceAccount (token from the TokenRequest API)."""
    token = api.kubectl("create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=6h").strip()
    server = api.api_client.configuration.host
    ca = api.api_client.configuration.ssl_ca_cert
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: bench\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n"
        f"users:\n- name: operator\n  user:\n    token: {token}\n"
        "contexts:\n- name: bench\n  context:\n    cluster: bench\n    user: operator\n"
        "current-context: bench\n"
    )
    path.chmod(0o600)
    return str(path)


def setup(api: Api, cfg: Config, workdir: Path) -> str:
    ns = cfg.namespace
    api.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    api.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/changetriggeredjobs.triggers.changejob.dev"
    )
    api.apply_json(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": ns}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{ns}-operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}],
            },
        ]
    )
    api.apply_json(apiserver.flow_schemas(service_account=SERVICE_ACCOUNT, namespace=ns))
    return operator_kubeconfig(api, namespace=ns, path=workdir / "operator.kubeconfig")


@contextmanager
def limit_client(kubeconfig: str, namespace: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = Path(__file__).with_name("limit_client.py")
    with (workdir / "limit-client.log").open("ab") as errlog:
        proc = subprocess.Popen(
            [sys.executable, str(script), f"--kubeconfig={kubeconfig}", f"--namespace={namespace}"],
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the baseline client did not start; see limit-client.log")
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------------------------------
# Steps


class Bench:
    def __init__(self, *, api: Api, cfg: Config, op_kubeconfig: str, workdir: Path, jw: JobWatch) -> None:
        self.api = api
        self.cfg = cfg
        self.op_kubeconfig = op_kubeconfig
        self.workdir = workdir
        self.jw = jw
        self.ns = cfg.namespace
        self.revision = 0
        self.rng = random.Random(cfg.seed)
        self.op: Operator | None = None
        self.populated = 0

    # --- helpers -----------------------------------------------------------------------------------
    def scrape(self) -> dict[str, Any]:
        return apiserver.scrape(self.api.raw("/metrics").decode())

    def new_operator(self, identity: str = "bench-0", extra: tuple[str, ...] = ()) -> Operator:
        return Operator(
            kubeconfig=self.op_kubeconfig, namespace=self.ns, logdir=self.workdir, identity=identity, extra=extra
        )

    def count_jobs(self) -> int:
        return sum(1 for _ in self.api.list_all(f"/apis/batch/v1/namespaces/{self.ns}/jobs", selector=jobs.OWNER_LABEL))

    def patch_object(self, j: int) -> float:
        """Change object j; the monotonic time the PATCH response arrived."""
        self.revision += 1
        self.api.patch(workload.object_path(j, self.ns), workload.change(j, self.revision))
        return time.monotonic()

    def patch_limit(self, k: int) -> float:
        self.revision += 1
        path = f"{workload.collection('ConfigMap', self.ns)}/{workload.limit_name(k)}"
        self.api.patch(path, {"data": {"rev": str(self.revision)}})
        return time.monotonic()

    # --- populate ------------------------------------------------------------------------------------
    def create_limit_configmaps(self, count: int) -> float:
        path = workload.collection("ConfigMap", self.ns)
        return self.api.create_many([(path, workload.limit_configmap(k, self.ns)) for k in range(count)])

    def warm_up_limit(self) -> None:
        owner = "limit:" + workload.limit_name(0)
        for _ in range(50):
            before = self.jw.count(owner)
            self.patch_limit(0)
            if self.jw.wait_for(owner, after_count=before, timeout=0.5) is not None:
                return
        raise RuntimeError("the baseline client creates no Jobs")

    def populate(self, size: int) -> dict[str, Any]:
        start = self.populated
        objs = [
            (workload.collection(workload.object_kind(j), self.ns), workload.watched_object(j, self.ns))
            for j in range(2 * start, 2 * size)
        ]
        ctjs = [
            (workload.collection("ChangeTriggeredJob", self.ns), workload.ctj(i, self.ns)) for i in range(start, size)
        ]
        log(f"creating {len(objs)} objects and {len(ctjs)} CTJs")
        t_objects = self.api.create_many(objs)
        created_at = time.monotonic()
        t_ctjs = self.api.create_many(ctjs)
        self.populated = size
        log(f"created in {t_objects:.1f}s + {t_ctjs:.1f}s; waiting for every baseline")
        baselined = self.wait_baselined(size)
        return {
            "objects_created": len(objs),
            "ctjs_created": len(ctjs),
            "objects_seconds": t_objects,
            "ctjs_seconds": t_ctjs,
            "all_baselined_after_first_ctj_seconds": baselined - created_at,
            "baseline_after_last_ctj_seconds": baselined - created_at - t_ctjs,
        }

    def baselined_count(self) -> int:
        done = 0
        for ctj in self.api.list_all(workload.collection("ChangeTriggeredJob", self.ns)):
            entries = (ctj.get("status") or {}).get("resourceHashes") or []
            if len(entries) == 2 and all(e.get("lastTriggeredHash") for e in entries):
                done += 1
        return done

    def not_present(self) -> int:
        """Resource entries of CTJ status whose state is not Present (every watched object exists)."""
        return sum(
            1
            for ctj in self.api.list_all(workload.collection("ChangeTriggeredJob", self.ns))
            for e in (ctj.get("status") or {}).get("resourceHashes") or ()
            if e.get("state") != "Present"
        )

    def wait_baselined(self, size: int, timeout: float = 1200.0) -> float:
        assert self.op is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.op.settle(expect_ctjs=size, timeout=deadline - time.monotonic())
            settled = time.monotonic()
            done = self.baselined_count()
            if done >= size:
                return settled - 3.0  # settle() waits 3 s of quiet after the last write
            log(f"{done}/{size} CTJs baselined")
            time.sleep(2.0)
        raise TimeoutError(f"not every CTJ baselined after {timeout}s")

    # --- restart -------------------------------------------------------------------------------------
    def relist_floor(self) -> float:
        """Seconds for one client to list every CTJ and watched object (a restart must at least)."""
        started = time.monotonic()
        for kind in ("ChangeTriggeredJob", "ConfigMap", "Secret", "Deployment"):
            for _ in self.api.list_all(workload.collection(kind, self.ns)):
                pass
        return time.monotonic() - started

    def background(self) -> dict[str, Any]:
        """Stop the operator and count the control plane's own requests for a while."""
        assert self.op is not None
        t0 = time.monotonic()
        self.op.stop()
        shutdown = time.monotonic() - t0
        log(f"operator stopped in {shutdown:.1f}s; background window {self.cfg.background:.0f}s")
        before = self.scrape()
        t1 = time.monotonic()
        time.sleep(self.cfg.background)
        after = self.scrape()
        elapsed = time.monotonic() - t1
        delta = apiserver.diff(before, after)
        return {
            "shutdown_seconds": shutdown,
            "seconds": elapsed,
            "all_per_minute": apiserver.per_minute(delta["all"], elapsed),
            "operator": delta["operator"],
        }

    def restart(self, size: int) -> dict[str, Any]:
        """Start the (stopped) operator: time to ready and to quiet, Jobs and requests it causes."""
        jobs_before = self.count_jobs()
        floor = self.relist_floor()
        before = self.scrape()
        self.op = self.new_operator()
        self.op.start()
        ready = self.op.wait_ready()
        self.op.settle(expect_ctjs=size)
        settled = time.monotonic() - self.op.started_at - 3.0  # settle() ends after 3 s of quiet
        after = self.scrape()
        m = self.op.metrics()
        jobs_after = self.count_jobs()
        rss, hwm = self.op.rss_mib()
        requests = apiserver.diff(before, after)["operator"]
        not_present = self.not_present()
        log(
            f"restart: ready {ready:.2f}s, quiet after {settled:.1f}s, {jobs_after - jobs_before} new Jobs, "
            f"{sum(requests.values()):.0f} requests, RSS {rss:.0f} MiB"
        )
        return {
            "ready_seconds": ready,
            "settled_seconds": settled,
            "relist_floor_seconds": floor,
            "ready_vs_floor": ratio(ready, floor),
            "jobs_created_by_restart": jobs_after - jobs_before,
            "jobs_created_metric": m.get("changejob_jobs_created_total", 0.0),
            "status_writes": m.get("changejob_status_writes_total{result=ok}", 0.0),
            "requests": requests,
            "requests_total": sum(requests.values()),
            "rss_mib": rss,
            "peak_rss_mib": hwm,
            "resources_not_present": not_present,
        }

    # --- idle ----------------------------------------------------------------------------------------
    def idle(self, operators: list[Operator], seconds: float) -> dict[str, Any]:
        before = self.scrape()
        cpu0 = [op.cpu_seconds() for op in operators]
        t0 = time.monotonic()
        time.sleep(seconds)
        after = self.scrape()
        elapsed = time.monotonic() - t0
        cpu1 = [op.cpu_seconds() for op in operators]
        delta = apiserver.diff(before, after)
        op_per_min = apiserver.per_minute(delta["operator"], elapsed)
        non_lease, leases = apiserver.split_leases(op_per_min)
        return {
            "seconds": elapsed,
            "operator_per_minute": op_per_min,
            "operator_non_lease_per_minute": non_lease,
            "operator_lease_per_minute": leases,
            "all_per_minute": apiserver.per_minute(delta["all"], elapsed),
            "cpu_percent": [100.0 * (b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)],
            "rss_mib": [op.rss_mib()[0] for op in operators],
            "peak_rss_mib": [op.rss_mib()[1] for op in operators],
        }

    # --- latency -------------------------------------------------------------------------------------
    def sample(self, owner: str, patch: Callable[[], float]) -> tuple[float | None, float]:
        before = self.jw.count(owner)
        sent = time.monotonic()
        answered = patch()
        arrived = self.jw.wait_for(owner, after_count=before, timeout=30.0)
        return (None if arrived is None else arrived - answered), answered - sent

    def latency(self, size: int) -> dict[str, Any]:
        candidates = workload.configmap_ctjs(size)
        chosen = self.rng.sample(candidates, min(self.cfg.samples, len(candidates)))
        op_lat: list[float] = []
        lim_lat: list[float] = []
        patch_rtt: list[float] = []
        lost = {"operator": 0, "limit": 0}
        for k, i in enumerate(chosen):
            value, rtt = self.sample(workload.ctj_name(i), lambda i=i: self.patch_object(2 * i))  # type: ignore[misc]
            patch_rtt.append(rtt)
            if value is None:
                lost["operator"] += 1
            else:
                op_lat.append(value)
            time.sleep(self.cfg.spacing)
            value, rtt = self.sample("limit:" + workload.limit_name(k), lambda k=k: self.patch_limit(k))  # type: ignore[misc]
            patch_rtt.append(rtt)
            if value is None:
                lost["limit"] += 1
            else:
                lim_lat.append(value)
            time.sleep(self.cfg.spacing)
        op_s, lim_s = summary(op_lat), summary(lim_lat)
        log(
            f"latency at {size}: operator p50 {op_s['p50'] * 1000:.0f} ms p99 {op_s['p99'] * 1000:.0f} ms; "
            f"limit p50 {lim_s['p50'] * 1000:.0f} ms p99 {lim_s['p99'] * 1000:.0f} ms"
        )
        return {
            "operator": op_s,
            "limit": lim_s,
            "patch_rtt": summary(patch_rtt),
            "lost": lost,
            "p50_ratio": ratio(op_s["p50"], lim_s["p50"]),
            "p99_ratio": ratio(op_s["p99"], lim_s["p99"]),
            "operator_samples": op_lat,
            "limit_samples": lim_lat,
        }

    # --- burst ---------------------------------------------------------------------------------------
    def _burst(self, owners: dict[str, int], patches: list[Callable[[], float]]) -> dict[str, Any]:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            done = [f.result() for f in [pool.submit(p) for p in patches]]
        patched = max(done)
        last = self.jw.wait_all(owners, timeout=600.0)
        time.sleep(5.0)  # late duplicates would show up by now
        counts = {o: self.jw.count(o) - before for o, before in owners.items()}
        return {
            "changes": len(patches),
            "patch_seconds": patched - t0,
            "all_jobs_seconds": None if last is None else last - t0,
            "after_last_patch_seconds": None if last is None else last - patched,
            "jobs_created": sum(counts.values()),
            "owners_without_job": sum(1 for c in counts.values() if c == 0),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        }

    def burst(self) -> dict[str, Any]:
        assert self.op is not None
        n = self.cfg.burst
        m0 = self.op.metrics()
        owners = {workload.ctj_name(i): self.jw.count(workload.ctj_name(i)) for i in range(n)}
        log(f"burst: {n} changes for the operator")
        op = self._burst(owners, [lambda i=i: self.patch_object(2 * i) for i in range(n)])  # type: ignore[misc]
        self.op.settle()
        m1 = self.op.metrics()
        created = "changejob_jobs_created_total"
        op["jobs_created_metric"] = m1.get(created, 0.0) - m0.get(created, 0.0)
        op["triggers"] = {
            k.split("=")[1].rstrip("}"): m1[k] - m0.get(k, 0.0) for k in m1 if k.startswith("changejob_triggers_total{")
        }
        log(f"burst: {n} changes for the baseline client")
        owners = {"limit:" + workload.limit_name(k): self.jw.count("limit:" + workload.limit_name(k)) for k in range(n)}
        lim = self._burst(owners, [lambda k=k: self.patch_limit(k) for k in range(n)])  # type: ignore[misc]
        result = {"operator": op, "limit": lim, "ratio": ratio(op["all_jobs_seconds"], lim["all_jobs_seconds"])}
        log(
            f"burst: operator {op['all_jobs_seconds']}s, limit {lim['all_jobs_seconds']}s, "
            f"duplicates {op['duplicates']}"
        )
        return result

    def running_jobs(self) -> int:
        """Jobs the Job controller has not finished yet (it lags far behind a burst on this machine)."""
        return sum(
            1 for j in self.api.list_all(f"/apis/batch/v1/namespaces/{self.ns}/jobs") if jobs.job_phase(j) == "Active"
        )

    def delete_limit_jobs(self) -> None:
        self.api.delete_collection(
            f"/apis/batch/v1/namespaces/{self.ns}/jobs", selector="bench.changejob.dev/limit-owner"
        )

    # --- HA ----------------------------------------------------------------------------------------
    def ha(self, size: int) -> dict[str, Any]:
        assert self.op is not None
        self.op.stop()
        out: dict[str, Any] = {}
        for replicas in (1, 3):
            jobs_before = self.count_jobs()
            ops = [self.new_operator(f"ha{replicas}-{r}", ("--leader-elect=true",)) for r in range(replicas)]
            for op in ops:
                op.start()
            log(f"HA: {replicas} replica(s) started")
            try:
                ready = [op.wait_ready() for op in ops]
                ownership = self.wait_owned(ops, size)
                for op in ops:
                    op.settle()
                window = self.idle(ops, self.cfg.ha_idle)
                # Read after the window: changejob_ctjs is refreshed by reconciles, and the window
                # (longer than the 60 s resync) contains at least one reconcile of every owned CTJ.
                exited = {op.identity: op.exit_code() for op in ops if op.exit_code() is not None}
                if exited:
                    log(f"HA {replicas}: replicas exited during the window: {exited}; see their logs")
                    out[str(replicas)] = {"ready_seconds": ready, "exited": exited, "idle": window}
                    continue
                per = [
                    {
                        "identity": op.identity,
                        "ctjs": op.metrics().get("changejob_ctjs", 0.0),
                        "shards": op.metrics().get("changejob_owned_shards", 0.0),
                    }
                    for op in ops
                ]
                for entry, rss, peak, cpu in zip(
                    per, window["rss_mib"], window["peak_rss_mib"], window["cpu_percent"], strict=True
                ):
                    entry.update(rss_mib=rss, peak_rss_mib=peak, cpu_percent=cpu)
                out[str(replicas)] = {
                    "ready_seconds": ready,
                    "converged_seconds": ownership["seconds"],
                    "owned_total": sum(p["ctjs"] for p in per),
                    "owned_total_at_convergence": ownership["owned"],
                    "complete": ownership["complete"],
                    "replicas": per,
                    "idle": window,
                    "jobs_created": self.count_jobs() - jobs_before,
                    "resources_not_present": self.not_present(),
                }
                log(
                    f"HA {replicas}: "
                    + ", ".join(f"{p['identity']} {p['ctjs']:.0f} CTJs {p['rss_mib']:.0f} MiB" for p in per)
                )
            except (OSError, RuntimeError, TimeoutError) as exc:  # a replica died or never got ready
                exited = {op.identity: op.exit_code() for op in ops if op.exit_code() is not None}
                log(f"HA {replicas}: {exc}; exited: {exited}")
                out[str(replicas)] = {"error": str(exc), "exited": exited}
            finally:
                for op in ops:
                    op.stop()
        self.op = self.new_operator()
        self.op.start()
        self.op.wait_ready()
        return out

    def wait_owned(
        self, ops: list[Operator], size: int, timeout: float = 180.0, stable: float = 20.0
    ) -> dict[str, Any]:
        """Wait until the replicas own every CTJ between them, or their total stops moving.

        Returns the seconds from the first start until then and the total owned (which falls short
        of ``size`` when a replica misses CTJs).
        """
        start = min(op.started_at for op in ops)
        deadline = time.monotonic() + timeout
        last, since = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            owned = [op.metrics().get("changejob_ctjs", 0.0) for op in ops]
            total = sum(owned)
            if total == size and (len(ops) == 1 or min(owned) > 0):
                return {"seconds": time.monotonic() - start, "owned": total, "complete": True}
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= stable and all(
                op.metrics().get("changejob_workqueue_depth", 0.0) == 0 for op in ops
            ):
                log(f"replicas own {total:.0f} of {size} CTJs and stopped moving")
                return {"seconds": since - start, "owned": total, "complete": False}
            time.sleep(0.5)
        return {"seconds": math.nan, "owned": last, "complete": False}


# --------------------------------------------------------------------------------------------------
# The whole run


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    log(f"cluster {cfg.cluster}: starting")
    kubeconfig = cluster_up(cfg.cluster)
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "sizes": {}}
    bench: Bench | None = None
    try:
        api = Api(kubeconfig=kubeconfig)
        version = api.get("/version")
        results["kubernetes"] = version.get("gitVersion")
        op_kubeconfig = setup(api, cfg, workdir)
        limit_count = max(cfg.samples, cfg.burst)
        jw = JobWatch(
            t=api.t,
            namespace=cfg.namespace,
            resource_version=api.list_rv(f"/apis/batch/v1/namespaces/{cfg.namespace}/jobs"),
        )
        jw.start()
        bench = Bench(api=api, cfg=cfg, op_kubeconfig=op_kubeconfig, workdir=workdir, jw=jw)
        log(f"creating {limit_count} ConfigMaps for the baseline client")
        bench.create_limit_configmaps(limit_count)
        with limit_client(kubeconfig, cfg.namespace, workdir) as lim:
            bench.warm_up_limit()
            bench.op = bench.new_operator()
            bench.op.start()
            ready = bench.op.wait_ready()
            bench.op.settle(expect_ctjs=0)
            empty_rss, _ = bench.op.rss_mib()
            results["empty"] = {"ready_seconds": ready, "rss_mib": empty_rss, "limit_client_rss_mib": _rss_of(lim.pid)}
            log(f"operator ready in {ready:.2f}s with no CTJs, RSS {empty_rss:.0f} MiB")
            for size in cfg.sizes:
                log(f"=== size {size}")
                res: dict[str, Any] = {"populate": bench.populate(size)}
                assert bench.op is not None
                m = bench.op.metrics()
                res["watched_objects"] = m.get("changejob_watched_objects", 0.0)
                res["watch_streams"] = m.get("changejob_watch_streams", 0.0)
                log(f"idle window {cfg.idle_for(size):.0f}s")
                res["idle"] = bench.idle([bench.op], cfg.idle_for(size))
                res["background"] = bench.background()
                res["restart"] = bench.restart(size)
                if cfg.memory_only:
                    results["sizes"][str(size)] = res
                    _write_partial(workdir, results)
                    continue
                res["latency"] = bench.latency(size)
                if size == cfg.burst_at:
                    res["burst"] = bench.burst()
                    bench.delete_limit_jobs()
                    res["burst"]["jobs_still_running"] = bench.running_jobs()
                results["sizes"][str(size)] = res
                _write_partial(workdir, results)
            if cfg.ha and not cfg.memory_only:
                largest = max(cfg.sizes)
                log(f"=== HA at {largest}")
                try:
                    results["ha"] = {"size": largest, **bench.ha(largest)}
                except (RuntimeError, TimeoutError) as exc:
                    log(f"HA failed: {exc}")
                    results["ha"] = {"size": largest, "error": str(exc)}
        results["growth"] = growth(results)
    finally:
        if bench is not None:
            bench.jw.stop()
            if bench.op is not None:
                bench.op.stop()
        (workdir / "operator.kubeconfig").unlink(missing_ok=True)  # it holds a token
        if not cfg.keep_cluster:
            log(f"deleting cluster {cfg.cluster}")
            cluster_down(cfg.cluster)
    return results


def _rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def _write_partial(workdir: Path, results: Mapping[str, Any]) -> None:
    import orjson

    (workdir / "partial.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def growth(results: Mapping[str, Any]) -> dict[str, Any]:
    """Exponent of each cost between 1 000 and 10 000 CTJs (0 flat, 1 linear)."""
    sizes = results["sizes"]
    if "1000" not in sizes or "10000" not in sizes:
        return {}
    a, b = sizes["1000"], sizes["10000"]
    costs = {}
    if "latency" in a and "latency" in b:
        costs["latency p50"] = (a["latency"]["operator"]["p50"], b["latency"]["operator"]["p50"])
        costs["latency p99"] = (a["latency"]["operator"]["p99"], b["latency"]["operator"]["p99"])
    costs |= {
        "API requests/min (non-Lease)": (
            a["idle"]["operator_non_lease_per_minute"],
            b["idle"]["operator_non_lease_per_minute"],
        ),
        "RSS (long-running)": (a["idle"]["rss_mib"][0], b["idle"]["rss_mib"][0]),
        "RSS (after restart)": (a["restart"]["rss_mib"], b["restart"]["rss_mib"]),
        "RSS above empty process": (
            a["restart"]["rss_mib"] - results["empty"]["rss_mib"],
            b["restart"]["rss_mib"] - results["empty"]["rss_mib"],
        ),
        "idle CPU": (a["idle"]["cpu_percent"][0], b["idle"]["cpu_percent"][0]),
        "restart to ready": (a["restart"]["ready_seconds"], b["restart"]["ready_seconds"]),
        "restart until quiet": (a["restart"]["settled_seconds"], b["restart"]["settled_seconds"]),
        "restart API requests": (a["restart"]["requests_total"], b["restart"]["requests_total"]),
        "baseline of new CTJs": (
            a["populate"]["all_baselined_after_first_ctj_seconds"],
            b["populate"]["all_baselined_after_first_ctj_seconds"],
        ),
    }
    return {
        k: {"at_1000": x, "at_10000": y, "exponent": growth_exponent(x, y, factor=10.0)} for k, (x, y) in costs.items()
    }
