"""An in-memory API server behind ``transport.Transport``'s interface, for unit tests of the runtime.

It is a small server, not a script of expected calls: objects are kept by resource and namespace,
get a uid, a resourceVersion and a creation time; POST of an existing name answers 409
AlreadyExists, PUT with a stale resourceVersion 409 Conflict, a PUT of ``/status`` changes only the
status; lists paginate (``limit``/``continue``) and filter by simple label selectors; watches replay
the collection's changes after a resourceVersion. Paths are parsed the way the API server parses
them: the query starts at the first ``?``, and each segment is percent-decoded after splitting, so a
name sent unescaped is read as the server would read it. :meth:`FakeTransport.fail` makes chosen
requests fail; every request is recorded in ``requests``.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from changejob.kube import resources, transport


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, Any]
    body: Any


@dataclasses.dataclass
class _Failure:
    method: str
    path: str
    error: BaseException
    times: int


@dataclasses.dataclass(frozen=True)
class _Where:
    collection: tuple[str, str]  # (api path prefix, plural)
    namespace: str | None
    name: str | None
    subresource: str | None


def parse(path: str) -> tuple[_Where, dict[str, str]]:
    """Split a request path as the API server does: query after the first ``?``, then segments."""
    raw, _, query = path.partition("?")
    parts = raw.strip("/").split("/")
    head, rest = ("/".join(parts[:2]), parts[2:]) if parts[0] == "api" else ("/".join(parts[:3]), parts[3:])
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = unquote(rest[1]), rest[2:]
    if not rest:  # a group-version: discovery
        return _Where((head, ""), None, None, None), dict(parse_qsl(query))
    plural = rest[0]
    name = unquote(rest[1]) if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return _Where((head, plural), namespace, name, sub), dict(parse_qsl(query))


def matches(labels: Mapping[str, str], selector: str | None) -> bool:
    """``k``, ``k=v`` and ``k in (a,b)`` terms, comma-separated (what the operator sends)."""
    if not selector:
        return True
    terms: list[str] = []
    depth = 0
    current = ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    for term in (t.strip() for t in terms):
        if " in " in term:
            key, _, values = term.partition(" in ")
            if labels.get(key.strip()) not in {v.strip() for v in values.strip("() ").split(",")}:
                return False
        elif "=" in term:
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term not in labels:
            return False
    return True


class FakeTransport(transport.Transport):
    """See the module docstring. Thread-safe."""

    def __init__(self) -> None:  # no super().__init__(): there is no server to connect to
        self.api_client = None  # type: ignore[assignment]
        self._lock = threading.Condition()
        self._objects: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = {}
        self._log: dict[tuple[str, str], list[tuple[int, str, dict[str, Any]]]] = {}
        self._rv = 100
        self._failures: list[_Failure] = []
        self.requests: list[Request] = []
        self.created_at = "2026-01-01T00:00:00Z"
        self.kinds: dict[str, list[dict[str, Any]]] = {}  # group-version path -> discovery resources

    # --- what tests use ---------------------------------------------------------------------------
    def serve(self, *types: resources.ResourceType) -> None:
        """Let discovery find these types."""
        with self._lock:
            for rtype in types:
                served = self.kinds.setdefault(resources.group_version_path(rtype.api_version).strip("/"), [])
                served.append({"name": rtype.plural, "kind": rtype.kind, "namespaced": rtype.namespaced})

    def add(self, rtype: resources.ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as if created by someone else (not recorded, never failed)."""
        meta = obj["metadata"]
        with self._lock:
            return self._create(self._where(rtype, meta.get("namespace"), None), copy.deepcopy(dict(obj)))

    def get(self, rtype: resources.ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._objects.get((self._collection(rtype)), {}).get(
                (namespace if rtype.namespaced else None, name)
            )
            return copy.deepcopy(found) if found is not None else None

    def all(self, rtype: resources.ResourceType) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._objects.get(self._collection(rtype), {}).values()]

    def fail(self, method: str, path: str, error: BaseException, *, times: int = 1) -> None:
        """Let the next ``times`` requests of ``method`` to a path starting with ``path`` raise ``error``."""
        with self._lock:
            self._failures.append(_Failure(method, path, error, times))

    def sent(self, method: str, path_prefix: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- transport.Transport ----------------------------------------------------------------------
    def drop_idle_connections(self) -> None:
        return None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float] = transport.DEFAULT_TIMEOUT,
        span_resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> Any:
        del content_type, timeout, span_resource, namespace, name
        where, in_path = parse(path)
        params = {**in_path, **{k: v for k, v in (query or {}).items() if v is not None}}
        with self._lock:
            self.requests.append(Request(method, path, params, copy.deepcopy(body)))
            self._maybe_fail(method, path)
            if method == "GET":
                return self._read(where, params)
            if method == "POST":
                return self._create(where, copy.deepcopy(body))
            if method == "PUT":
                return self._update(where, copy.deepcopy(body))
            if method == "DELETE":
                return self._delete(where)
        raise transport.ApiError(405, "MethodNotAllowed", method)

    def stream(self, path: str, *, query: Mapping[str, Any], read_timeout: float) -> Iterator[Mapping[str, Any]]:
        where, _ = parse(path)
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 1), 1.0)
        while time.monotonic() < deadline:
            with self._lock:
                fresh = [e for e in self._log.get(where.collection, []) if e[0] > since]
                if not fresh:
                    self._lock.wait(0.05)
                    continue
            for rv, kind, obj in fresh:
                since = rv
                if where.namespace is None or obj["metadata"].get("namespace") == where.namespace:
                    yield {"type": kind, "object": obj}

    # --- the server ---------------------------------------------------------------------------------
    def _collection(self, rtype: resources.ResourceType) -> tuple[str, str]:
        return parse(rtype.path())[0].collection

    def _where(self, rtype: resources.ResourceType, namespace: str | None, name: str | None) -> _Where:
        return _Where(self._collection(rtype), namespace if rtype.namespaced else None, name, None)

    def _maybe_fail(self, method: str, path: str) -> None:
        for failure in self._failures:
            if failure.times > 0 and failure.method == method and path.startswith(failure.path):
                failure.times -= 1
                raise failure.error

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, where: _Where, kind: str, obj: dict[str, Any]) -> None:
        self._log.setdefault(where.collection, []).append(
            (int(obj["metadata"]["resourceVersion"]), kind, copy.deepcopy(obj))
        )
        self._lock.notify_all()

    def _read(self, where: _Where, params: Mapping[str, Any]) -> Any:
        if not where.collection[1]:
            if where.collection[0] not in self.kinds:
                raise transport.ApiError(404, "NotFound", f"{where.collection[0]} is not served")
            return {"resources": copy.deepcopy(self.kinds[where.collection[0]])}
        held = self._objects.get(where.collection, {})
        if where.name is not None:
            found = held.get((where.namespace, where.name))
            if found is None:
                raise transport.ApiError(404, "NotFound", f"{where.collection[1]} {where.name!r} not found")
            return copy.deepcopy(found)
        items = [
            o
            for (ns, _), o in sorted(held.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if (where.namespace is None or ns == where.namespace)
            and matches(o["metadata"].get("labels") or {}, params.get("labelSelector"))
        ]
        start = int(params.get("continue") or 0)
        limit = int(params.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        more = start + limit < len(items)
        meta = {"resourceVersion": str(self._rv), **({"continue": str(start + limit)} if more else {})}
        return {"items": copy.deepcopy(page), "metadata": meta}

    def _create(self, where: _Where, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        namespace = where.namespace if where.namespace is not None else meta.get("namespace")
        key = (namespace, meta.get("name", ""))
        held = self._objects.setdefault(where.collection, {})
        if key in held:
            raise transport.ApiError(409, "AlreadyExists", f"{where.collection[1]} {key[1]!r} already exists")
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(uid=meta.get("uid") or str(uuid.uuid4()), resourceVersion=self._next_rv())
        meta.setdefault("creationTimestamp", self.created_at)
        meta.setdefault("generation", 1)
        held[key] = body
        self._record(where, "ADDED", body)
        return copy.deepcopy(body)

    def _update(self, where: _Where, body: dict[str, Any]) -> dict[str, Any]:
        held = self._objects.get(where.collection, {})
        key = (where.namespace, where.name or "")
        current = held.get(key)
        if current is None:
            raise transport.ApiError(404, "NotFound", f"{where.collection[1]} {key[1]!r} not found")
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise transport.ApiError(409, "Conflict", "the object has been modified; please apply your changes")
        if where.subresource == "status":
            updated = {**current, "status": body.get("status")}
        else:
            updated = {**body, "metadata": {**body["metadata"], "uid": current["metadata"]["uid"]}}
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
        updated["metadata"] = {**updated["metadata"], "resourceVersion": self._next_rv()}
        held[key] = updated
        self._record(where, "MODIFIED", updated)
        return copy.deepcopy(updated)

    def _delete(self, where: _Where) -> dict[str, Any]:
        held = self._objects.get(where.collection, {})
        found = held.pop((where.namespace, where.name or ""), None)
        if found is None:
            raise transport.ApiError(404, "NotFound", f"{where.collection[1]} {where.name!r} not found")
        found["metadata"] = {**found["metadata"], "resourceVersion": self._next_rv()}
        self._record(where, "DELETED", found)
        return {"kind": "Status", "status": "Success"}
