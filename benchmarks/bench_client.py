"""The benchmark's own API access: bulk creation, paged lists, patches, the API server's /metrics.

It reuses the operator's JSON transport (plain dicts, orjson) with the admin kubeconfig, so its
requests belong to ``system:masters`` and never count as the operator's (see ``apiserver.py``).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import urllib3

from changejob.kube import transport

REPO = Path(__file__).resolve().parents[1]
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
FIELD_MANAGER = {"fieldManager": "changejob-bench"}  # the transport's user agent would name the operator


class Api:
    def __init__(self, *, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.api_client = transport.load_api_client(kubeconfig=kubeconfig)
        self.t = transport.Transport(self.api_client)
        self._host = str(self.api_client.configuration.host).rstrip("/")

    # --- single requests ------------------------------------------------------------------------------
    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.t.request("GET", path, query=query, timeout=(5.0, 120.0))

    def create(self, path: str, body: Mapping[str, Any]) -> None:
        """POST; an object that already exists is fine (creation is resumable)."""
        for attempt in range(5):
            try:
                self.t.request("POST", path, body=body, query=FIELD_MANAGER, timeout=(5.0, 60.0))
                return
            except transport.ApiError as exc:
                if exc.already_exists:
                    return
                if exc.status in (0, 429, 500, 503, 504) and attempt < 4:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.t.request("PATCH", path, body=body, query=FIELD_MANAGER, content_type=transport.MERGE_PATCH)

    def delete_collection(self, path: str, *, selector: str) -> None:
        self.t.request(
            "DELETE",
            path,
            query={"labelSelector": selector},
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            timeout=(5.0, 300.0),
        )

    def raw(self, path: str) -> bytes:
        """A GET whose answer is not JSON (``/metrics``)."""
        pool: urllib3.PoolManager = self.api_client.rest_client.pool_manager
        response = pool.request(
            "GET",
            self._host + path,
            headers={"Accept": "text/plain"},
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=False,
        )
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        data: bytes = response.data
        return data

    # --- bulk -------------------------------------------------------------------------------------
    def create_many(self, items: Sequence[tuple[str, Mapping[str, Any]]], *, threads: int = 8) -> float:
        """Create every (collection path, body) with a few threads; seconds taken."""
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            for future in [pool.submit(self.create, path, body) for path, body in items]:
                future.result()
        return time.monotonic() - started

    def list_all(self, path: str, *, selector: str | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
        cont: str | None = None
        while True:
            data = self.get(path, {"limit": page, "continue": cont, "labelSelector": selector})
            yield from data.get("items") or ()
            cont = (data.get("metadata") or {}).get("continue") or None
            if not cont:
                return

    def list_rv(self, path: str, *, selector: str | None = None) -> str:
        """The collection's current resourceVersion, to start a watch from now."""
        data = self.get(path, {"limit": 1, "labelSelector": selector})
        return str(data["metadata"]["resourceVersion"])

    # --- kubectl ----------------------------------------------------------------------------------
    def kubectl(self, *args: str, input_: str | None = None, check: bool = True) -> str:
        out = subprocess.run(
            [str(KUBECTL), "--kubeconfig", self.kubeconfig, *args],
            input=input_,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply_json(self, objects: Sequence[Mapping[str, Any]]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_=orjson.dumps(doc).decode())
