"""HTTPS server for the admission webhook, inside the operator process.

A ``ThreadingHTTPServer`` in a daemon thread: one thread per connection (the API server keeps
connections alive), TLS 1.2 or newer, AdmissionReview v1 JSON in and out (orjson). The TLS handshake
runs in the connection's thread, not in the accept loop, so a slow client cannot stall the others.

Callers can be restricted to the API server: with ``client_ca_file`` every connection must present
a client certificate signed by that CA (the one the API server's admission configuration gives it
for webhooks), and with ``client_names`` its common name or a DNS name must be one of them; anything
else is refused before a request is read. Whatever the caller, an answer carries no detail of an
internal failure (that goes to the log).

Certificates are reloaded without a restart: before each new connection the certificate and key
files (and the client CA) are stat'ed, and a changed set is loaded into a new ``SSLContext``. A pair
caught half-written (a key that does not match the certificate yet) is ignored until both files
agree, and the previous context keeps serving meanwhile. Rotation (``webhook.certs``), cert-manager
and mounted Secrets all just replace the files.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from changejob.webhook import admission

log = logging.getLogger(__name__)

ROUTES = admission.PATHS
MAX_BODY = 8 * 1024 * 1024  # an AdmissionReview holds the object and, on UPDATE, the old one
IDLE_TIMEOUT = 30.0

Handler = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


class Certificates:
    """The current server ``SSLContext``, rebuilt when the certificate or key file changes."""

    def __init__(self, *, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._client_ca_file = client_ca_file
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._context = self._load()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        files = (self._cert_file, self._key_file) + ((self._client_ca_file,) if self._client_ca_file else ())
        stats = tuple(os.stat(f) for f in files)
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(certfile=self._cert_file, keyfile=self._key_file)
        if self._client_ca_file is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self._client_ca_file)
        return context

    def context(self) -> ssl.SSLContext:
        """The context for a new connection; reloads first if the files changed."""
        try:
            signature = self._stat()
        except OSError:  # a file is being replaced right now; serve what we have
            return self._context
        with self._lock:
            if signature != self._signature:
                try:
                    self._context = self._load()
                    self._signature = signature
                    log.info("reloaded webhook certificate from %s", self._cert_file)
                except (OSError, ssl.SSLError) as exc:
                    log.debug("webhook certificate not loadable yet: %s", exc)
            return self._context


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        *,
        certificates: Certificates,
        handler: Handler,
        routes: Collection[str],
        client_names: Collection[str] = (),
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.certificates = certificates
        self.handler = handler
        self.routes = frozenset(routes)
        self.client_names = frozenset(client_names)
        super().__init__(address, _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        context = self.certificates.context()
        return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("webhook connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook %s: " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fail(self, status: int, message: str) -> None:
        self._send(status, message.encode() + b"\n", "text/plain; charset=utf-8")

    def _client_allowed(self) -> bool:
        """Whether the client certificate names an allowed caller (always, without a name list)."""
        if not self.server.client_names:
            return True
        cert = self.request.getpeercert() or {}
        names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
        names |= {value for key, value in cert.get("subjectAltName", ()) if key == "DNS"}
        return bool(names & self.server.client_names)

    def do_POST(self) -> None:
        if not self._client_allowed():
            self.close_connection = True
            self._fail(403, "client certificate not allowed")
            return
        path = urlsplit(self.path).path  # the API server appends ?timeout=...
        if path not in self.server.routes:
            self._fail(404, f"no webhook at {path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self.close_connection = True
            self._fail(413 if length > MAX_BODY else 411, "a body of known, bounded length is required")
            return
        try:
            review = orjson.loads(self.rfile.read(length))
            request = review["request"]
            uid = str(request["uid"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._fail(400, "expected an AdmissionReview with a request")
            return
        out = {
            "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": self._respond(path, request, uid),
        }
        self._send(200, orjson.dumps(out))

    def _respond(self, path: str, request: Mapping[str, Any], uid: str) -> dict[str, Any]:
        try:
            response = dict(self.server.handler(path, request))
        except Exception:
            # The exception may quote API answers; the caller is told only that it failed.
            log.exception("admission review %s on %s failed", uid, path)
            response = admission.deny(
                uid, code=500, message="internal error in the kube-changejob webhook; see the operator's log"
            )
        response["uid"] = uid
        return response


class WebhookServer:
    """The admission webhook's HTTPS endpoint: ``start()``, ``stop()``, ``port``, ``ready()``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cert_file: Path | str,
        key_file: Path | str,
        handler: Handler,
        routes: Collection[str] = ROUTES,
        client_ca_file: Path | str | None = None,
        client_names: Collection[str] = (),
    ) -> None:
        self._address = (host, port)
        self._certificates = Certificates(
            cert_file=Path(cert_file),
            key_file=Path(key_file),
            client_ca_file=Path(client_ca_file) if client_ca_file else None,
        )
        self._handler = handler
        self._routes = routes
        self._client_names = tuple(client_names)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; returns once the socket listens."""
        self._httpd = _HTTPServer(
            self._address,
            certificates=self._certificates,
            handler=self._handler,
            routes=self._routes,
            client_names=self._client_names,
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="webhook-server",
            daemon=True,
        )
        self._thread.start()
        log.info("admission webhook listening on %s:%d", self._address[0], self.port)

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._httpd is None:
            return self._address[1]
        return int(self._httpd.server_address[1])

    def ready(self) -> bool:
        return self._httpd is not None and self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting, close the socket, wait for the serving thread."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None
