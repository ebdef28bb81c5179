"""The TCP relay the watch resilience tests break the network with (tests/integration/relay.py).

Those tests conclude things about the operator from how the relay behaves (a frozen connection stays
open and silent, a connection frozen for good never speaks again, a dropped one is closed), so the
relay's own behaviour is checked here, against a real echo server on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from relay import Relay

pytestmark = pytest.mark.unit


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A TCP server on 127.0.0.1 that sends back whatever it receives."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield ("127.0.0.1", int(server.getsockname()[1]))
    server.close()


@pytest.fixture
def relay(echo: tuple[str, int]) -> Iterator[Relay]:
    r = Relay(*echo)
    yield r
    r.close()


def connect(relay: Relay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    sock.settimeout(0.5)
    return sock


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> bytes | None:
    """Send ``payload`` and read the echo; None when nothing comes back within the socket timeout."""
    sock.sendall(payload)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"x")
        return sock.recv(4096) == b""
    except (ConnectionError, TimeoutError):
        return True


def test_bytes_are_relayed_both_ways(relay: Relay) -> None:
    with connect(relay) as sock:
        assert round_trip(sock) == b"ping"
    assert relay.accepted == 1


def test_frozen_connection_stays_open_and_silent_until_thawed(relay: Relay) -> None:
    with connect(relay) as sock:
        assert round_trip(sock) == b"ping"
        relay.freeze()
        assert round_trip(sock, b"held") is None
        assert relay.open_connections() == 1
        relay.thaw()
        sock.settimeout(2.0)
        assert sock.recv(4096) == b"held"  # what was held is delivered, nothing lost
        assert round_trip(sock) == b"ping"


def test_new_connections_are_frozen_too(relay: Relay) -> None:
    relay.freeze()
    with connect(relay) as sock:
        assert round_trip(sock) is None
        relay.thaw()
        sock.settimeout(2.0)
        assert sock.recv(4096) == b"ping"


def test_thaw_without_revive_leaves_old_connections_dead(relay: Relay) -> None:
    with connect(relay) as old:
        assert round_trip(old) == b"ping"
        relay.freeze()
        relay.thaw(revive=False)
        assert round_trip(old) is None
        with connect(relay) as new:
            assert round_trip(new) == b"ping"
        assert round_trip(old) is None


def test_a_frozen_connection_does_not_pass_on_its_close(relay: Relay) -> None:
    with connect(relay) as sock:
        assert round_trip(sock) == b"ping"
        relay.freeze()
    time.sleep(0.3)
    assert relay.open_connections() == 1  # the client is gone, the server still sees it open
    relay.drop()
    assert relay.open_connections() == 0


def test_drop_closes_every_connection_and_new_ones_work(relay: Relay) -> None:
    with connect(relay) as first, connect(relay) as second:
        assert round_trip(first) == b"ping" and round_trip(second) == b"ping"
        relay.drop()
        assert closed_by_peer(first) and closed_by_peer(second)
    with connect(relay) as third:
        assert round_trip(third) == b"ping"


def test_cut_holds_new_connections_unanswered_until_healed(relay: Relay) -> None:
    with connect(relay) as before:
        relay.cut()
        assert closed_by_peer(before)
    with connect(relay) as during:
        assert round_trip(during) is None
        relay.heal()
        assert closed_by_peer(during)
    with connect(relay) as after:
        assert round_trip(after) == b"ping"
