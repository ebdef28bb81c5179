"""Resolve apiVersion + kind to a REST resource through API discovery, cached.

A group-version's resource list is fetched once and kept. A kind that is not found refreshes its
group-version at most once per ``refresh_interval`` seconds, so a CRD installed after a CTJ was
created is picked up without hammering discovery for a kind that really does not exist.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from kubernetes import client as k8s_client

from changejob.kube import transport


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource: what a (apiVersion, kind) maps to."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        """The list/watch path, namespaced when ``namespace`` is given and the type is namespaced."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, *, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


class Discovery:
    """Thread-safe cache of group-version resource lists."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        refresh_interval: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time  # the clock is injectable; the default is the monotonic one

        self._transport = transport.Transport(api_client)
        self._refresh_interval = refresh_interval
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._by_gv: dict[str, dict[str, ResourceType]] = {}
        self._fetched_at: dict[str, float] = {}

    def resolve(self, *, api_version: str, kind: str) -> ResourceType | None:
        """The resource for ``kind`` in ``api_version``, or None if the server does not serve it."""
        with self._lock:
            known = self._by_gv.get(api_version)
            fetched = self._fetched_at.get(api_version)
        if known is not None and kind in known:
            return known[kind]
        if fetched is not None and self._clock() - fetched < self._refresh_interval:
            return None
        kinds = self._fetch(api_version)
        return kinds.get(kind)

    def _fetch(self, api_version: str) -> dict[str, ResourceType]:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        kinds: dict[str, ResourceType] = {}
        try:
            body = self._transport.request("GET", path, span_resource="discovery")
        except transport.ApiError as exc:
            if exc.status not in (404, 503):
                raise
            body = {}
        for entry in (body or {}).get("resources", []):
            name = entry.get("name", "")
            if "/" in name:  # subresources such as deployments/status
                continue
            kinds[entry["kind"]] = ResourceType(
                group=group,
                version=version,
                kind=entry["kind"],
                plural=name,
                namespaced=bool(entry.get("namespaced")),
            )
        with self._lock:
            self._by_gv[api_version] = kinds
            self._fetched_at[api_version] = self._clock()
        return kinds
