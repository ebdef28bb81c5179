"""Probes: /metrics, /healthz and /readyz over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from changejob.telemetry import metrics, probes

pytestmark = pytest.mark.unit


def get(
    server: probes.Server, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """One request: (status, content type, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def server() -> Iterator[probes.Server]:
    """A server with every endpoint on a free loopback port."""
    one = probes.Server("127.0.0.1:0")
    one.start()
    yield one
    one.stop()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9443", ("::1", 9443)),
        ("localhost:8081", ("localhost", 8081)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert probes.parse_address(address) == expected


@pytest.mark.parametrize("address", ["8080", ":http", "host:", ":70000", ""])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        probes.parse_address(address)


def test_port_is_read_back_after_start(server: probes.Server) -> None:
    assert server.port > 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_metrics_endpoint_serves_the_registry(server: probes.Server) -> None:
    metrics.watch_stalls_total.inc()
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "changejob_watch_stalls_total" in body
    expected = metrics.REGISTRY.get_sample_value("changejob_watch_stalls_total")
    assert f"changejob_watch_stalls_total {expected}" in body


def test_metrics_endpoint_negotiates_openmetrics(server: probes.Server) -> None:
    status, content_type, body = get(
        server, "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"}
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_healthz_follows_liveness(server: probes.Server) -> None:
    assert get(server, "/healthz")[0] == 200
    alive = threading.Event()
    alive.set()
    server.add_liveness("loop", alive.is_set)
    status, _, body = get(server, "/healthz")
    assert (status, body) == (200, "[+]loop ok\nhealthz check passed\n")
    alive.clear()
    status, _, body = get(server, "/healthz")
    assert (status, body) == (503, "[-]loop failed\nhealthz check failed\n")


def test_readyz_needs_every_check(server: probes.Server) -> None:
    state = {"watches": False, "leases": True}
    server.add_readiness("watches", lambda: state["watches"])
    server.add_readiness("leases", lambda: state["leases"])
    status, content_type, body = get(server, "/readyz")
    assert status == 503
    assert content_type.startswith("text/plain")
    assert body == "[+]leases ok\n[-]watches failed\nreadyz check failed\n"
    state["watches"] = True
    status, _, body = get(server, "/readyz?verbose")
    assert (status, body) == (200, "[+]leases ok\n[+]watches ok\nreadyz check passed\n")


def test_a_raising_or_non_true_check_fails(server: probes.Server) -> None:
    def broken() -> bool:
        raise RuntimeError("no cache yet")

    server.add_readiness("cache", broken)
    assert get(server, "/readyz")[0] == 503
    server.add_readiness("cache", lambda: 1)  # type: ignore[arg-type,return-value]
    assert get(server, "/readyz")[0] == 503
    server.add_readiness("cache", lambda: True)
    assert get(server, "/readyz")[0] == 200


def test_head_has_no_body(server: probes.Server) -> None:
    status, _, body = get(server, "/healthz", method="HEAD")
    assert (status, body) == (200, "")


def test_unknown_path_is_404(server: probes.Server) -> None:
    assert get(server, "/")[0] == 404
    assert get(server, "/debug")[0] == 404


def test_a_server_serves_only_the_endpoints_it_was_given() -> None:
    metrics_only = probes.Server("127.0.0.1:0", metrics=True, probes=False)
    probes_only = probes.Server("127.0.0.1:0", metrics=False, probes=True)
    metrics_only.start()
    probes_only.start()
    try:
        assert metrics_only.port != probes_only.port
        assert [get(metrics_only, p)[0] for p in ("/metrics", "/healthz", "/readyz")] == [200, 404, 404]
        assert [get(probes_only, p)[0] for p in ("/metrics", "/healthz", "/readyz")] == [404, 200, 200]
    finally:
        metrics_only.stop()
        probes_only.stop()


def test_stop_releases_the_port_and_is_idempotent() -> None:
    one = probes.Server("127.0.0.1:0")
    one.start()
    port = one.port
    one.stop()
    one.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = one.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    again = probes.Server(f"127.0.0.1:{port}")
    again.start()
    try:
        assert get(again, "/healthz")[0] == 200
    finally:
        again.stop()


def test_start_twice_is_an_error(server: probes.Server) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        server.start()


def test_address_in_use_is_reported(server: probes.Server) -> None:
    with pytest.raises(OSError, match="in use"):
        probes.Server(f"127.0.0.1:{server.port}").start()
