"""Raw JSON transport to the API server, built on the official client's configuration.

The official ``kubernetes`` client supplies what is hard to get right: kubeconfig and in-cluster
loading, TLS, token refresh. Its generated model layer, though, turns every object into a tree of
model instances; at thousands of watched objects that costs more CPU and memory than the work itself.
So requests here are plain data (method, path, query, body) and responses are parsed with orjson into
plain dicts, through the client's own connection pool and credentials.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from changejob import __version__
from changejob.telemetry import metrics, tracing

USER_AGENT = f"kube-changejob/{__version__}"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT = (5.0, 15.0)
LIST_TIMEOUT = (5.0, 60.0)  # a list page of 500 objects can take a while on a busy server
PAGE_SIZE = 500


@dataclasses.dataclass(slots=True)
class Page:
    """One page of a list: its items and the list's metadata (``continue``, ``resourceVersion``)."""

    items: list[Any]
    metadata: Mapping[str, Any]

    @property
    def last(self) -> bool:
        return not self.metadata.get("continue")

    @property
    def resource_version(self) -> str | None:
        value = self.metadata.get("resourceVersion")
        return str(value) if value else None


@dataclasses.dataclass(eq=False)
class ApiError(Exception):
    """A non-2xx answer from the API server (or no answer at all: status 0)."""

    status: int
    reason: str
    message: str
    body: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409 and self.reason != "AlreadyExists"

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def gone(self) -> bool:
        return self.status == 410


def load_api_client(*, kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """An ApiClient from a kubeconfig file, $KUBECONFIG, ~/.kube/config or the in-cluster config.

    Never touches the client's global default configuration, so several clients (several simulated
    replicas, the webhook's user impersonation in tests) coexist in one process.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if kubeconfig or os.path.exists(path):
        api: k8s_client.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=path.split(os.pathsep)[0], context=context
        )
    else:
        configuration = k8s_client.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        api = k8s_client.ApiClient(configuration)
    api.configuration.connection_pool_maxsize = 64
    api.user_agent = USER_AGENT
    # The pool is created lazily from configuration; rebuild it so maxsize applies.
    api.rest_client = type(api.rest_client)(api.configuration)
    return api


class Transport:
    """Sends JSON requests through an ApiClient's pool and credentials."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self.api_client = api_client
        self._host = str(api_client.configuration.host).rstrip("/")
        self._pool: urllib3.PoolManager = api_client.rest_client.pool_manager

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        auth = self.api_client.configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        return headers

    def drop_idle_connections(self) -> None:
        """Close pooled keep-alive connections (after a silent network failure they may be dead)."""
        self._pool.clear()

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        if not query:
            return self._host + path
        clean = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
        return f"{self._host}{path}?{urlencode(clean)}"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        span_resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> Any:
        """One request; returns the parsed JSON body (None for an empty one) or raises ApiError."""
        payload = None if body is None else orjson.dumps(body)
        headers = self._headers(content_type or (JSON if payload is not None else None))
        metrics.api_requests_total.labels(*verb_and_resource(method, path)).inc()
        with tracing.api_call(method=method, resource=span_resource or path, namespace=namespace, name=name):
            try:
                response = self._pool.request(
                    method,
                    self.url(path, query),
                    body=payload,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                metrics.api_errors_total.labels(code="0").inc()
                raise ApiError(0, "ConnectionError", str(exc)) from exc
            data = response.data
            if response.status >= 300:
                raise error_from(response.status, data)
            return orjson.loads(data) if data else None

    def list_pages(
        self,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        page_size: int = PAGE_SIZE,
        span_resource: str | None = None,
        timeout: tuple[float, float] = LIST_TIMEOUT,
    ) -> Iterator[Page]:
        """A paginated list, one page at a time (``limit`` / ``continue``), the last page last.

        The page's response body is released before its items are handed out, and nothing of a page
        is kept once the caller asks for the next, so a collection of any size is never held at once
        (callers empty ``items`` as they go: see ``watch.hand_over``).
        """
        cont: str | None = None
        while True:
            body = self.request(
                "GET",
                path,
                query={**(query or {}), "limit": page_size, "continue": cont},
                span_resource=span_resource,
                timeout=timeout,
            )
            page = Page(items=body.get("items") or [], metadata=body.get("metadata") or {})
            del body
            cont = page.metadata.get("continue") or None
            yield page
            del page
            if not cont:
                return

    def stream(self, path: str, *, query: Mapping[str, Any], read_timeout: float) -> Iterator[Mapping[str, Any]]:
        """A watch stream: yields each JSON line as a dict until the server ends it.

        A read that waits longer than ``read_timeout`` raises ApiError(0, "Timeout"): the caller treats
        a silent stream as stalled and re-establishes it.
        """
        metrics.api_requests_total.labels("watch", verb_and_resource("GET", path)[1]).inc()
        try:
            response = self._pool.request(
                "GET",
                self.url(path, query),
                headers=self._headers(None),
                preload_content=False,
                timeout=urllib3.Timeout(connect=DEFAULT_TIMEOUT[0], read=read_timeout),
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            metrics.api_errors_total.labels(code="0").inc()
            raise ApiError(0, "ConnectionError", str(exc)) from exc
        try:
            if response.status >= 300:
                raise error_from(response.status, response.read())
            buffer = b""
            try:
                for chunk in response.stream(amt=None, decode_content=True):
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line, buffer = buffer[:end], buffer[end + 1 :]
                        if line.strip():
                            yield orjson.loads(line)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise ApiError(0, "Timeout", f"watch silent for {read_timeout:.0f}s") from exc
            except urllib3.exceptions.ProtocolError as exc:
                raise ApiError(0, "ConnectionError", str(exc)) from exc
        finally:
            response.release_conn()
            response.close()


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def verb_and_resource(method: str, path: str) -> tuple[str, str]:
    """The API server's verb and resource for a request path (``/apis/g/v/namespaces/ns/r/name/sub``).

    A GET of a collection is ``list``, of one object ``get``; the resource carries its subresource.
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = "/".join(rest[0:1] + rest[2:3]) or "-"
    if method == "GET":
        return ("get" if len(rest) >= 2 else "list"), resource
    return _VERBS.get(method, method.lower()), resource


def error_from(status: int, data: bytes) -> ApiError:
    """Build an ApiError from a metav1.Status body (or whatever the server sent)."""
    metrics.api_errors_total.labels(code=str(status)).inc()
    try:
        body = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        body = {"message": data[:500].decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {}
    return ApiError(status, str(body.get("reason") or status), str(body.get("message") or ""), body)
