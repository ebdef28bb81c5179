"""HTTP endpoints for Prometheus and the kubelet: ``/metrics``, ``/healthz`` and ``/readyz``.

One ``Server`` binds one address and serves the endpoints it was asked for; the operator runs one
for metrics and one for probes (or a single one if both addresses are the same). Addresses follow
the kubebuilder flags: ``":8080"`` is every IPv4 interface, ``"127.0.0.1:0"`` picks a free port (read
it back from ``port``), ``"[::]:8080"`` is IPv6.

``/healthz`` answers 200 while every liveness check returns True (the manager registers one that
says its loop is alive); ``/readyz`` answers 200 only while every readiness check returns True. Both
list their checks in the kube-apiserver style and answer 503 otherwise. A check that raises counts
as failed. Checks run on the request thread, so they must be quick and must not block.
"""

from __future__ import annotations

import http
import logging
import socket
import threading
from collections.abc import Callable
from http import server as http_server
from typing import cast

from changejob.telemetry import metrics

Check = Callable[[], bool]

_log = logging.getLogger(__name__)


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port``; an empty host means every IPv4 interface, ``[v6]`` is an IPv6 host."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid address {address!r}; expected host:port, e.g. ':8080'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class Server:
    """A small threaded HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` (daemon thread)."""

    def __init__(self, address: str, *, metrics: bool = True, probes: bool = True) -> None:
        """Prepare to serve on ``address``; nothing is bound until ``start``."""
        self._address = parse_address(address)
        self._paths: set[str] = set()
        if metrics:
            self._paths.add("/metrics")
        if probes:
            self._paths.update({"/healthz", "/readyz"})
        self._lock = threading.Lock()
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_liveness(self, name: str, fn: Check) -> None:
        """Make ``/healthz`` fail while ``fn()`` is not True (a later check of that name replaces it)."""
        with self._lock:
            self._liveness[name] = fn

    def add_readiness(self, name: str, fn: Check) -> None:
        """Make ``/readyz`` fail while ``fn()`` is not True (a later check of that name replaces it)."""
        with self._lock:
            self._readiness[name] = fn

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); only valid after ``start``."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        """Bind the address and serve in a daemon thread; raises OSError if the address is taken."""
        if self._httpd is not None:
            raise RuntimeError("the server is already started")
        httpd = _HTTPServer(self._address, owner=self)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"http-{self._address[0]}:{httpd.server_address[1]}",
            daemon=True,
        )
        self._httpd, self._thread = httpd, thread
        thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serves(self, path: str) -> bool:
        """Whether ``path`` is one of the endpoints this server was asked to serve."""
        return path in self._paths

    def liveness(self) -> tuple[bool, str]:
        """Run the liveness checks: (all passed, report body)."""
        with self._lock:
            checks = dict(self._liveness)
        return _run(kind="healthz", checks=checks)

    def readiness(self) -> tuple[bool, str]:
        """Run the readiness checks: (all passed, report body)."""
        with self._lock:
            checks = dict(self._readiness)
        return _run(kind="readyz", checks=checks)


def _run(*, kind: str, checks: dict[str, Check]) -> tuple[bool, str]:
    """Evaluate ``checks`` in name order; the body has one ``[+]name ok`` / ``[-]name failed`` line each."""
    lines: list[str] = []
    passed = True
    for name in sorted(checks):
        ok = _passes(name=name, check=checks[name])
        passed = passed and ok
        lines.append(f"[+]{name} ok" if ok else f"[-]{name} failed")
    lines.append(f"{kind} check passed" if passed else f"{kind} check failed")
    return passed, "\n".join(lines) + "\n"


def _passes(*, name: str, check: Check) -> bool:
    """True only if ``check()`` returns exactly True; an exception is a failure (logged at debug)."""
    try:
        return check() is True
    except Exception:
        _log.debug("probe check raised", exc_info=True, extra={"check": name})
        return False


class _HTTPServer(http_server.ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its ``Server`` and its address family."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, owner: Server) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(http_server.BaseHTTPRequestHandler):
    """GET/HEAD for the three endpoints; everything else is 404 or 405."""

    server_version = "kube-changejob"
    sys_version = ""
    timeout = 10  # a client that sends nothing does not hold a thread for long

    def do_GET(self) -> None:
        """Serve the endpoint named by the path (the query string is ignored)."""
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        """Like GET, without the body."""
        self._respond(with_body=False)

    def _respond(self, *, with_body: bool) -> None:
        owner = cast(_HTTPServer, self.server).owner
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if not owner.serves(path):
            self._send(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", with_body)
            return
        if path == "/metrics":
            body, content_type = metrics.render(accept=self.headers.get("Accept"))
            self._send(http.HTTPStatus.OK, body, content_type, with_body)
            return
        passed, report = owner.liveness() if path == "/healthz" else owner.readiness()
        status = http.HTTPStatus.OK if passed else http.HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, report.encode(), "text/plain; charset=utf-8", with_body)

    def _send(self, status: http.HTTPStatus, body: bytes, content_type: str, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Access lines go to the debug log instead of stderr (probes arrive every few seconds)."""
        _log.debug(format, *args)
