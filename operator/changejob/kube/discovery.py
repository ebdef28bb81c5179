"""Resolve apiVersion + kind to a REST resource through API discovery, cached.

A group-version's resource list is fetched once and kept. A kind that is not found refreshes its
group-version at most once per ``refresh_interval`` seconds, so a CRD installed after a CTJ was
created is picked up without hammering discovery for a kind that really does not exist. Workers
that miss the same group-version at once (every worker, right after a restart) share one fetch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from changejob.kube import resources, transport


class Discovery:
    """Thread-safe cache of group-version resource lists."""

    def __init__(
        self,
        transport_: transport.Transport,
        *,
        refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport_
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._by_gv: dict[str, dict[str, resources.ResourceType]] = {}
        self._fetched_at: dict[str, float] = {}
        self._fetching: dict[str, threading.Lock] = {}

    def resolve(self, *, api_version: str, kind: str) -> resources.ResourceType | None:
        """The resource for ``kind`` in ``api_version``, or None if the server does not serve it."""
        known, found = self._cached(api_version, kind)
        if known:
            return found
        with self._lock:
            fetching = self._fetching.setdefault(api_version, threading.Lock())
        with fetching:  # one fetch per group-version at a time; who waited for it reads its answer
            known, found = self._cached(api_version, kind)
            if known:
                return found
            return self._fetch(api_version).get(kind)

    def _cached(self, api_version: str, kind: str) -> tuple[bool, resources.ResourceType | None]:
        """(True, the answer) when the cache can answer: the kind is known, or its group-version was
        fetched lately without it; (False, None) when the group-version must be fetched."""
        with self._lock:
            known = self._by_gv.get(api_version)
            fetched = self._fetched_at.get(api_version)
        if known is not None and kind in known:
            return True, known[kind]
        if fetched is not None and self._clock() - fetched < self._refresh_interval:
            return True, None
        return False, None

    def _fetch(self, api_version: str) -> dict[str, resources.ResourceType]:
        group, _, version = api_version.rpartition("/")
        kinds: dict[str, resources.ResourceType] = {}
        try:
            body = self._transport.request("GET", resources.group_version_path(api_version), span_resource="discovery")
        except transport.ApiError as exc:
            if exc.status not in (404, 503):
                raise
            body = {}
        for entry in (body or {}).get("resources", []):
            name = entry.get("name", "")
            if "/" in name:  # subresources such as deployments/status
                continue
            kinds[entry["kind"]] = resources.ResourceType(
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
