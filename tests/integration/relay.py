"""A real TCP relay on 127.0.0.1 between a client and the API server, to break the network on cue.

TLS passes through untouched (the relay only copies bytes), so a client that trusts the API server
trusts it through the relay too: the server certificate names 127.0.0.1.

Failure modes, each a thing real networks do:

- ``cut()``: a partition. Open connections are closed; new ones are accepted but never answered, so
  requests time out. ``heal()`` ends it (the connections held meanwhile are closed).
- ``drop()``: a connection reset. Every open connection is closed at once; new ones work.
- ``freeze()``: a silent, half-dead network. Nothing flows, not even the end of a stream, but every
  connection stays open; new connections are accepted and frozen too. ``thaw()`` lets the bytes flow
  again; ``thaw(revive=False)`` leaves the connections frozen so far frozen for good (like a peer that
  vanished without closing them) and lets only new connections flow.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
from pathlib import Path

import yaml
from kubernetes import client as k8s_client


class _Link:
    """One relayed connection: the client's socket, the API server's, and whether bytes may flow."""

    def __init__(self, downstream: socket.socket, *, flowing: bool) -> None:
        self.downstream = downstream
        self.upstream: socket.socket | None = None
        self.flowing = threading.Event()
        self.closed = threading.Event()
        if flowing:
            self.flowing.set()

    def wait_flowing(self) -> bool:
        """Block while the link is frozen; False once it is closed."""
        while not self.flowing.wait(0.05):
            if self.closed.is_set():
                return False
        return not self.closed.is_set()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.downstream, self.upstream):
            if sock is not None:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Relay:
    """A TCP relay to ``host:port`` listening on 127.0.0.1 (``port`` attribute); see the module docstring."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._cut = threading.Event()
        self._frozen = threading.Event()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self.accepted = 0  # connections accepted so far: a reconnect shows up here
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            link = _Link(downstream, flowing=not self._frozen.is_set())
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            if self._cut.is_set():
                continue  # held open, never answered: requests time out
            try:
                link.upstream = socket.create_connection(self._target)
            except OSError:
                link.close()
                continue
            threading.Thread(target=self._pump, args=(link, downstream, link.upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, link.upstream, downstream), daemon=True).start()

    @staticmethod
    def _pump(link: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not link.wait_flowing():
                    return
                sink.sendall(data)
            link.wait_flowing()  # a frozen link passes on not even the end of the stream
        except OSError:
            pass
        finally:
            link.close()

    def _take_links(self) -> list[_Link]:
        with self._lock:
            links, self._links = self._links, []
        return links

    def _live_links(self) -> list[_Link]:
        with self._lock:
            self._links = [link for link in self._links if not link.closed.is_set()]
            return list(self._links)

    def open_connections(self) -> int:
        return len(self._live_links())

    def drop(self) -> None:
        """Close every open connection; new connections are relayed as usual."""
        for link in self._take_links():
            link.close()

    def cut(self) -> None:
        self._cut.set()
        self.drop()

    def heal(self) -> None:
        self._cut.clear()
        self.drop()

    def freeze(self) -> None:
        self._frozen.set()
        for link in self._live_links():
            link.flowing.clear()

    def thaw(self, *, revive: bool = True) -> None:
        self._frozen.clear()
        if revive:
            for link in self._live_links():
                link.flowing.set()

    def close(self) -> None:
        _shut(self._server)
        self.drop()


def relayed_client(api_client: k8s_client.ApiClient, relay: Relay) -> k8s_client.ApiClient:
    """A copy of ``api_client`` that reaches the API server through ``relay``."""
    configuration = copy.deepcopy(api_client.configuration)
    configuration.host = f"https://127.0.0.1:{relay.port}"
    return k8s_client.ApiClient(configuration)


def target_of(api_client: k8s_client.ApiClient) -> tuple[str, int]:
    """The (host, port) ``api_client`` talks to."""
    host = str(api_client.configuration.host).split("://", 1)[1].rstrip("/")
    name, _, port = host.rpartition(":")
    return name, int(port)


def relayed_kubeconfig(kubeconfig: Path, relay: Relay, out: Path) -> Path:
    """Write a copy of ``kubeconfig`` whose clusters are reached through ``relay``; return its path."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config.get("clusters") or ():
        entry["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    out.write_text(yaml.safe_dump(config))
    return out
