"""The operator as a host process (``.venv/bin/kube-changejob run``): start, readiness, metrics, RSS, CPU."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / ".venv" / "bin" / "kube-changejob"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Operator:
    def __init__(
        self, *, kubeconfig: str, namespace: str, logdir: Path, identity: str = "bench-0", extra: Sequence[str] = ()
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.identity = identity
        self.extra = list(extra)
        self.log_path = logdir / f"operator-{identity}.log"
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def args(self) -> list[str]:
        return [
            str(ENTRY),
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespaces={self.namespace}",
            f"--leader-election-namespace={self.namespace}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.probe_port}",
            f"--identity={self.identity}",
            "--log-level=warning",
            *self.extra,
        ]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "operator not started"
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} {' '.join(self.args())}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)

    def _status(self, path: str, port: int) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds from process start to the first /readyz 200 (polled every 50 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"operator {self.identity} exited; see {self.log_path}")
            if self._status("/readyz", self.probe_port) == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.05)
        raise TimeoutError(f"operator {self.identity} not ready after {timeout}s; see {self.log_path}")

    def metrics(self) -> dict[str, float]:
        """The changejob_* samples, keyed ``name`` or ``name{label=value,...}``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.startswith("changejob_"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
                if "le" in sample.labels:
                    continue  # histogram buckets: not needed here
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def exit_code(self) -> int | None:
        """The exit status if the process has ended (negative: killed by that signal), else None."""
        return None if self.proc is None else self.proc.poll()

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB from /proc/<pid>/status: now and the peak so far; NaN once exited."""
        if self.exit_code() is not None:
            return math.nan, math.nan
        values = {}
        with open(f"/proc/{self.pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, rest = line.split(":", 1)
                    values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (NaN once it has exited)."""
        if self.exit_code() is not None:
            return math.nan
        with open(f"/proc/{self.pid}/stat", encoding="utf-8") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def settle(self, *, quiet: float = 3.0, timeout: float = 600.0, expect_ctjs: int | None = None) -> float:
        """Wait until the work queue is empty and no status write or Job happened for ``quiet`` s.

        Returns the seconds waited. ``expect_ctjs``: also wait until the replica owns that many CTJs.
        """
        started = time.monotonic()
        deadline = started + timeout
        last: tuple[float, float] | None = None
        calm_since = time.monotonic()
        while time.monotonic() < deadline:
            m = self.metrics()
            marks = (m.get("changejob_status_writes_total{result=ok}", 0.0), m.get("changejob_jobs_created_total", 0.0))
            busy = m.get("changejob_workqueue_depth", 0.0) > 0 or marks != last
            if expect_ctjs is not None and m.get("changejob_ctjs", 0.0) != expect_ctjs:
                busy = True
            last = marks
            now = time.monotonic()
            if busy:
                calm_since = now
            elif now - calm_since >= quiet:
                return now - started - quiet
            time.sleep(0.5)
        raise TimeoutError(f"operator {self.identity} did not settle in {timeout}s")
