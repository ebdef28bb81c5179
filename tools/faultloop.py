#!/usr/bin/env python3
"""Fault loop: N operator replicas under faults must turn every change into exactly one Job.

Starts operator processes (``kube-changejob run --leader-elect=true``) against a local kwok cluster
of its own (``tools/cluster.sh up NAME``; its kube-apiserver is restarted on purpose, so it is not
the shared test cluster), creates CTJs with ``cooldown: 0s`` whose names are spread over the shards,
and drives a steady stream of ConfigMap changes: a CTJ's next change is made only once the Job for
its previous change exists, so every change must yield exactly one Job. Meanwhile, in this order:

  measure Lease writes at 1 replica, then at 3 (or --replicas)
  SIGKILL a replica (and start a replacement)     SIGTERM a replica (and start a replacement)
  SIGSTOP a replica for longer than the lease duration, then SIGCONT it
  restart the kube-apiserver                      add a replica            remove a replica

Victims are chosen at random among the replicas that own at least one CTJ's shard. At the end it
counts the Jobs of every CTJ (every Job name ever seen, through a list+watch) against the changes
made, prints duplicates and lost changes and exits 1 if there are any (or if a replica died
unasked). Handover times are measured on the shard Leases: from the signal until every shard is
held by a surviving replica.

Usage: .venv/bin/python tools/faultloop.py [--quick] [--replicas 3] [--cluster NAME] [--down] ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from changejob.domain import shards as shards_mod  # noqa: E402  (after the path set-up above)
from changejob.kube import leases, transport, watch  # noqa: E402

CRD = REPO / "crds" / "triggers.changejob.dev_changetriggeredjobs.yaml"
OWNER_LABEL = "changejob.dev/owner"
TRIGGER_ANNOTATION = "changejob.dev/trigger"


def say(message: str) -> None:
    print(f"[faultloop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``check``; return the seconds it took or raise TimeoutError."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(transport.ApiError):
            if check():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- the cluster ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Cluster:
    name: str
    kubeconfig: str = ""

    def _sh(self, *args: str) -> str:
        out = subprocess.run(
            [str(REPO / "tools" / "cluster.sh"), *args, self.name], check=True, stdout=subprocess.PIPE, text=True
        )
        return out.stdout

    def up(self) -> None:
        for line in self._sh("up").splitlines():
            if line.startswith("export KUBECONFIG="):
                self.kubeconfig = line.split("=", 1)[1]
        if not self.kubeconfig:
            raise RuntimeError("tools/cluster.sh up printed no KUBECONFIG")

    def restart_apiserver(self) -> None:
        self._sh("apiserver-restart")

    def down(self) -> None:
        self._sh("down")

    def kubectl(self, *args: str) -> None:
        subprocess.run(
            [str(REPO / ".tools" / "bin" / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )


# --- operator replicas ------------------------------------------------------------------------------
class Replica:
    """One ``kube-changejob run`` process with leader election on."""

    def __init__(self, *, identity: str, args: list[str], workdir: Path) -> None:
        self.identity = identity
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.log_path = workdir / f"{identity}.log"
        self.args = [
            *args,
            f"--identity={identity}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.probe_port}",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.expected_exit = False

    def start(self) -> Replica:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self._get(self.probe_port, "/readyz") is not None

    def lease_writes(self) -> float:
        return self._metric(r"changejob_lease_writes_total\{[^}]*\}")

    def owned_shards(self) -> float:
        return self._metric("changejob_owned_shards")

    def _metric(self, pattern: str) -> float:
        text = self._get(self.metrics_port, "/metrics") or ""
        return sum(float(m.group(1)) for m in re.finditer(rf"^{pattern} (\S+)$", text, re.MULTILINE))

    @staticmethod
    def _get(port: int, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError):
            return None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.expected_exit = True
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False

    def wait_exit(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        if not self.alive():
            return
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        self.wait_exit()


class Fleet:
    def __init__(self, *, base_args: list[str], workdir: Path) -> None:
        self._base = base_args
        self._workdir = workdir
        self._next = 0
        self.all: list[Replica] = []

    def add(self) -> Replica:
        self._next += 1
        replica = Replica(identity=f"replica-{self._next}", args=self._base, workdir=self._workdir).start()
        self.all.append(replica)
        return replica

    def running(self) -> list[Replica]:
        """Alive and not paused: the replicas that should own the shards."""
        return [r for r in self.all if r.alive() and not r.paused]

    def died_unasked(self) -> list[Replica]:
        return [r for r in self.all if not r.alive() and not r.expected_exit]

    def close(self) -> None:
        for replica in self.all:
            replica.close()


# --- counting Jobs ----------------------------------------------------------------------------------
class JobCounter:
    """A list+watch sink that remembers every Job name ever seen per owner CTJ, with arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.names: dict[str, dict[str, float]] = {}
        self.sequences: dict[str, list[int]] = {}

    def _add(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(OWNER_LABEL)
        if not owner:
            return
        with self._lock:
            seen = self.names.setdefault(owner, {})
            if meta["name"] not in seen:
                seen[meta["name"]] = time.monotonic()
                seq = (meta.get("annotations") or {}).get(TRIGGER_ANNOTATION, "")
                self.sequences.setdefault(owner, []).append(int(seq) if seq.isdigit() else -1)

    def count(self, owner: str) -> int:
        with self._lock:
            return len(self.names.get(owner, ()))

    def arrivals(self, owner: str) -> list[float]:
        with self._lock:
            return sorted(self.names.get(owner, {}).values())

    # the watch.Sink protocol
    def begin_sync(self) -> None:
        return None

    def synced_object(self, obj: Mapping[str, Any]) -> None:
        self._add(obj)

    def end_sync(self) -> None:
        return None

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self._add(obj)

    def failed(self, error: transport.ApiError) -> None:
        say(f"job watch failed: {error}")


@dataclasses.dataclass
class Stream:
    ctj: str
    configmap: str
    changes: int = 0
    made_at: list[float] = dataclasses.field(default_factory=list)
    last_made: float = 0.0
    pending_since: float | None = None  # a patch whose answer was lost is retried with the same value


class Driver(threading.Thread):
    """Changes each CTJ's ConfigMap once the Job for its previous change exists."""

    def __init__(
        self, *, t: transport.Transport, namespace: str, streams: list[Stream], counter: JobCounter, interval: float
    ) -> None:
        super().__init__(name="driver", daemon=True)
        self._t = t
        self._ns = namespace
        self.streams = streams
        self._counter = counter
        self._interval = interval
        self.stop_event = threading.Event()
        self.slow: list[tuple[str, int, float]] = []

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            now = time.monotonic()
            for stream in self.streams:
                if self._counter.count(stream.ctj) >= stream.changes and now - stream.last_made >= self._interval:
                    self._change(stream)

    def _change(self, stream: Stream) -> None:
        value = f"v{stream.changes + 1}"
        path = f"/api/v1/namespaces/{self._ns}/configmaps/{stream.configmap}"
        try:
            self._t.request(
                "PATCH", path, body={"data": {"value": value}}, content_type=transport.MERGE_PATCH, timeout=(2.0, 5.0)
            )
        except transport.ApiError as exc:
            # Unknown outcome: retry the same value later; a repeated identical patch changes nothing.
            if stream.pending_since is None:
                stream.pending_since = time.monotonic()
                say(f"change {value} of {stream.configmap} failed ({exc}); retrying")
            return
        stream.changes += 1
        stream.last_made = stream.pending_since or time.monotonic()
        stream.made_at.append(stream.last_made)
        stream.pending_since = None

    def latencies(self) -> list[float]:
        out: list[float] = []
        for stream in self.streams:
            arrivals = self._counter.arrivals(stream.ctj)
            out += [arrived - made for made, arrived in zip(stream.made_at, arrivals, strict=False)]
        return out


# --- the scenario -----------------------------------------------------------------------------------
def spread_names(*, namespace: str, count: int, shards: int) -> list[str]:
    """CTJ names whose shards are spread evenly, so every replica owns some of them."""
    names = []
    for i in range(count):
        target = i * shards // count
        suffix = 0
        while shards_mod.shard_of(namespace=namespace, name=f"ctj-{i}-{suffix}", shards=shards) != target:
            suffix += 1
        names.append(f"ctj-{i}-{suffix}")
    return names


def ctj_body(*, name: str, namespace: str, configmap: str) -> dict[str, Any]:
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "cooldown": "0s",
            "history": 1000,  # the maximum: no Job is pruned during a run
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "containers": [{"name": "hello", "image": "busybox", "command": ["true"]}],
                            "restartPolicy": "Never",
                        }
                    },
                }
            },
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "name": configmap, "namespace": namespace}],
        },
    }


class Scenario:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.cluster = Cluster(opts.cluster)
        self.namespace = f"faultloop-{os.getpid()}-{self.rng.randrange(16**4):04x}"
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="faultloop-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"handover_s": {}, "lease_writes_per_min": {}}
        self.fleet: Fleet
        self.t: transport.Transport
        self.view: leases.Leases
        self.streams: list[Stream] = []
        self.counter = JobCounter()
        self.stop = threading.Event()
        self.driver: Driver | None = None
        self.namespace_created = False

    # set-up
    def setup(self) -> None:
        self.cluster.up()
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/changetriggeredjobs.triggers.changejob.dev"
        )
        self.t = transport.Transport(transport.load_api_client(kubeconfig=self.cluster.kubeconfig))
        self.t.request("POST", "/api/v1/namespaces", body={"metadata": {"name": self.namespace}})
        self.namespace_created = True
        self.view = leases.Leases(self.t, namespace=self.namespace, timeout=(2.0, 5.0))
        o = self.opts
        base = [
            str(REPO / ".venv" / "bin" / "kube-changejob"),
            "run",
            f"--kubeconfig={self.cluster.kubeconfig}",
            "--leader-elect=true",
            f"--leader-election-namespace={self.namespace}",
            f"--namespaces={self.namespace}",
            f"--shards={o.shards}",
            f"--leader-elect-lease-duration={o.lease_duration}s",
            f"--leader-elect-renew-deadline={o.renew_deadline}s",
            f"--leader-elect-retry-period={o.retry_period}s",
            "--log-format=json",
        ]
        self.fleet = Fleet(base_args=base, workdir=self.workdir)
        say(f"cluster {self.cluster.name}, namespace {self.namespace}, logs in {self.workdir}")

    def create_ctjs(self) -> None:
        for name in spread_names(namespace=self.namespace, count=self.opts.ctjs, shards=self.opts.shards):
            cm = f"{name}-cm"
            self.t.request(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/configmaps",
                body={"metadata": {"name": cm}, "data": {"value": "v0"}},
            )
            self.t.request(
                "POST",
                f"/apis/triggers.changejob.dev/v1alpha/namespaces/{self.namespace}/changetriggeredjobs",
                body=ctj_body(name=name, namespace=self.namespace, configmap=cm),
            )
            self.streams.append(Stream(ctj=name, configmap=cm))

    def baselines_recorded(self) -> bool:
        for stream in self.streams:
            ctj = self.t.request(
                "GET",
                f"/apis/triggers.changejob.dev/v1alpha/namespaces/{self.namespace}/changetriggeredjobs/{stream.ctj}",
            )
            entries = (ctj.get("status") or {}).get("resourceHashes") or []
            if not entries or not all(e.get("lastTriggeredHash") for e in entries):
                return False
        return True

    def start_driver(self) -> None:
        jobs = watch.ListWatch(
            transport_=self.t,
            path=f"/apis/batch/v1/namespaces/{self.namespace}/jobs",
            sink=self.counter,
            stop=self.stop,
            label_selector=OWNER_LABEL,
            watch_timeout=60,
            stall_timeout=30,
            name="faultloop-jobs",
        )
        threading.Thread(target=jobs.run, name="jobs", daemon=True).start()
        wait_for(jobs.synced.is_set, timeout=30, what="the Job list")
        self.driver = Driver(
            t=self.t, namespace=self.namespace, streams=self.streams, counter=self.counter, interval=self.opts.interval
        )
        self.driver.start()

    # observations on the shard Leases
    def holders(self) -> dict[int, str]:
        snapshot = self.view.snapshot()
        return {n: leases.holder(snapshot.shards.get(n)) for n in range(self.opts.shards)}

    def held_by(self, identities: set[str]) -> bool:
        return all(h in identities for h in self.holders().values())

    def balanced(self) -> bool:
        identities = {r.identity for r in self.fleet.running()}
        holders = self.holders()
        if not identities or not all(h in identities for h in holders.values()):
            return False
        counts = [list(holders.values()).count(i) for i in identities]
        if max(counts) - min(counts) > 1:
            return False
        # The Leases say who should act; the replicas must also have taken the shards up.
        return sum(r.owned_shards() for r in self.fleet.running()) == float(self.opts.shards)

    def wait_balanced(self, what: str) -> float:
        for replica in self.fleet.running():
            wait_for(replica.ready, timeout=60, what=f"{replica.identity} ready")
        took = wait_for(self.balanced, timeout=self.opts.lease_duration * 3 + 30, what=f"balance after {what}")
        say(f"balanced after {what} in {took:.2f}s ({len(self.fleet.running())} replicas)")
        return took

    def victim(self) -> Replica:
        """A random running replica that owns at least one CTJ's shard."""
        ctj_shards = {
            shards_mod.shard_of(namespace=self.namespace, name=s.ctj, shards=self.opts.shards) for s in self.streams
        }
        holders = self.holders()
        owners = {holders[n] for n in ctj_shards}
        candidates = [r for r in self.fleet.running() if r.identity in owners] or self.fleet.running()
        return self.rng.choice(candidates)

    def pause(self) -> None:
        time.sleep(self.opts.pause)

    # phases
    def measure_lease_writes(self, label: str) -> None:
        replicas = self.fleet.running()
        before = sum(r.lease_writes() for r in replicas)
        time.sleep(self.opts.steady)
        after = sum(r.lease_writes() for r in replicas)
        per_minute = (after - before) * 60 / self.opts.steady
        self.results["lease_writes_per_min"][label] = round(per_minute, 1)
        say(f"Lease writes at {label}: {per_minute:.1f}/min (retry period {self.opts.retry_period}s)")

    def handover(self, sig: signal.Signals, *, replace: bool) -> None:
        victim = self.victim()
        survivors = {r.identity for r in self.fleet.running() if r is not victim}
        say(f"{sig.name} {victim.identity}")
        start = time.monotonic()
        victim.signal(sig)
        took = wait_for(
            lambda: self.held_by(survivors),
            timeout=self.opts.lease_duration * 3 + 30,
            what=f"handover after {sig.name}",
        )
        self.results["handover_s"].setdefault(sig.name, []).append(round(took, 2))
        say(f"every shard held by survivors {took:.2f}s after {sig.name}")
        if sig == signal.SIGSTOP:
            time.sleep(max(0.0, self.opts.lease_duration + 1 - (time.monotonic() - start)))
            victim.signal(signal.SIGCONT)
            say(f"SIGCONT {victim.identity} after {time.monotonic() - start:.1f}s")
            self.wait_balanced("SIGCONT")
            return
        if sig == signal.SIGTERM:
            victim.wait_exit()
        if replace:
            self.fleet.add()
        self.wait_balanced(f"{sig.name}{' and a replacement' if replace else ''}")

    def restart_apiserver(self) -> None:
        say("restarting kube-apiserver")
        start = time.monotonic()
        self.cluster.restart_apiserver()
        say(f"kube-apiserver back after {time.monotonic() - start:.1f}s")
        self.wait_balanced("the kube-apiserver restart")

    def run(self) -> None:
        o = self.opts
        self.setup()
        self.create_ctjs()
        self.fleet.add()
        self.wait_balanced("start")
        wait_for(self.baselines_recorded, timeout=60, what="baselines", interval=0.2)
        self.start_driver()
        self.measure_lease_writes("1 replica")
        for _ in range(o.replicas - 1):
            self.fleet.add()
        self.wait_balanced(f"scaling to {o.replicas}")
        self.measure_lease_writes(f"{o.replicas} replicas")
        if o.only_lease_writes:
            return
        self.handover(signal.SIGKILL, replace=True)
        self.pause()
        self.handover(signal.SIGTERM, replace=True)
        self.pause()
        self.handover(signal.SIGSTOP, replace=False)
        self.pause()
        if not o.no_apiserver_restart:
            self.restart_apiserver()
            self.pause()
        self.fleet.add()
        self.wait_balanced("adding a replica")
        self.pause()
        self.handover(signal.SIGTERM, replace=False)
        self.pause()

    def settle(self) -> None:
        assert self.driver is not None
        self.driver.stop_event.set()
        self.driver.join(5)
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: all(self.counter.count(s.ctj) >= s.changes for s in self.streams),
                timeout=self.opts.settle,
                what="the last Jobs",
                interval=0.2,
            )
        time.sleep(self.opts.lease_duration + 2)  # a late duplicate would show up by now

    def report(self) -> int:
        assert self.driver is not None
        duplicates, lost, bad_sequences = {}, {}, {}
        changes = jobs = 0
        for stream in self.streams:
            count = self.counter.count(stream.ctj)
            changes += stream.changes
            jobs += count
            if count > stream.changes:
                duplicates[stream.ctj] = count - stream.changes
            elif count < stream.changes:
                lost[stream.ctj] = stream.changes - count
            with self.counter._lock:
                sequences = sorted(self.counter.sequences.get(stream.ctj, []))
            if sequences != list(range(1, len(sequences) + 1)):
                bad_sequences[stream.ctj] = sequences
        latencies = sorted(self.driver.latencies())
        died = [r.identity for r in self.fleet.died_unasked()]
        self.results.update(
            ctjs=len(self.streams),
            changes=changes,
            jobs=jobs,
            duplicates=duplicates,
            lost=lost,
            bad_sequences=bad_sequences,
            replicas_died_unasked=died,
            change_to_job_s={
                "p50": _pct(latencies, 0.5),
                "p99": _pct(latencies, 0.99),
                "max": round(latencies[-1], 2) if latencies else None,
            },
        )
        print(json.dumps(self.results, indent=2))
        failed = bool(duplicates or lost or bad_sequences or died)
        say(
            ("FAILED: " if failed else "OK: ") + f"{changes} changes, {jobs} Jobs, duplicates {duplicates}, "
            f"lost {lost}, replicas died unasked {died}"
        )
        return 1 if failed else 0

    def cleanup(self) -> None:
        self.stop.set()
        if self.driver is not None:
            self.driver.stop_event.set()
        with contextlib.suppress(AttributeError):
            self.fleet.close()
        if self.namespace_created and not self.opts.keep:
            with contextlib.suppress(transport.ApiError):
                self.t.request("DELETE", f"/api/v1/namespaces/{self.namespace}")
        if self.opts.down:
            self.cluster.down()


def _pct(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cluster", default="changejob-faultloop", help="kwok cluster name (tools/cluster.sh)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--ctjs", type=int, default=8)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between two changes of one CTJ")
    p.add_argument("--lease-duration", type=float, default=4.0)
    p.add_argument("--renew-deadline", type=float, default=3.0)
    p.add_argument("--retry-period", type=float, default=0.5)
    p.add_argument("--steady", type=float, default=20.0, help="seconds of each Lease-write measurement")
    p.add_argument("--pause", type=float, default=5.0, help="seconds between two faults")
    p.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the last Jobs")
    p.add_argument("--quick", action="store_true", help="short run: 4 CTJs, 1 s interval, short pauses")
    p.add_argument("--no-apiserver-restart", action="store_true")
    p.add_argument(
        "--only-lease-writes",
        action="store_true",
        help="only measure Lease writes at 1 and --replicas replicas (no faults)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workdir", default=None, help="where replica logs go (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the namespace (CTJs, Jobs, Leases)")
    p.add_argument("--down", action="store_true", help="delete the cluster at the end")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.ctjs, opts.interval, opts.steady, opts.pause = min(opts.ctjs, 4), 1.0, 5.0, 2.0
    if opts.seed is None:
        opts.seed = random.randrange(2**32)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    say(f"seed {opts.seed}")
    scenario = Scenario(opts)
    try:
        scenario.run()
        scenario.settle()
        return scenario.report()
    except TimeoutError as exc:
        say(f"FAILED: {exc}")
        if scenario.driver is not None:
            scenario.report()
        return 1
    finally:
        scenario.cleanup()


if __name__ == "__main__":
    sys.exit(main())
