"""Run the real operator (`kube-changejob run`) as a child process against the test cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """One operator process; ``logs`` collects its output in a file for assertions and debugging."""

    def __init__(
        self,
        *,
        kubeconfig: str,
        namespace: str,
        workdir: Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.workdir = workdir
        self.extra = list(extra)
        self.env = env or {}
        self.name = name
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.log"

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "changejob.cli",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespaces={self.namespace}",
            f"--leader-election-namespace={self.namespace}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.probe_port}",
            f"--identity={self.name}",
            "--log-format=json",
            "--log-level=debug",
            *self.extra,
        ]

    def start(self, *, wait_ready: bool = True) -> OperatorProcess:
        env = {**os.environ, **self.env}
        src = str(Path(__file__).resolve().parents[2] / "operator")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            if self.http_status("/readyz") == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"operator not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def http_status(self, path: str) -> int:
        port = self.metrics_port if path == "/metrics" else self.probe_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code
