"""The physical limit of change→Job on this machine: watch, then create a Job. Nothing else.

The cluster benchmark runs this as a separate process next to the operator. It watches the
ConfigMaps labelled ``bench.changejob.dev/limit=true`` and, for every MODIFIED event, creates a Job
at once, from a pool of worker threads (as many as the operator's reconcile workers). It keeps no
state, hashes nothing, writes no status and no Events: whatever the operator adds on top of this is
its own cost. It uses the operator's own transport (orjson over the official client's connection
pool), so the HTTP stack is the same on both sides.

The Job has the operator's shape (``jobs.build_job`` from a CTJ-like owner and template) with the label
``bench.changejob.dev/limit-owner=<configmap>`` instead of the owner label, and an owner reference
to the ConfigMap, so deleting the ConfigMaps deletes these Jobs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import sys
from collections.abc import Mapping
from typing import Any

from changejob.domain import jobs
from changejob.kube import transport

LIMIT_SELECTOR = "bench.changejob.dev/limit=true"
LIMIT_OWNER_LABEL = "bench.changejob.dev/limit-owner"

log = logging.getLogger("limit-client")


def job_template() -> dict[str, Any]:
    """The jobTemplate the benchmark's CTJs use too."""
    return {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "hello", "image": "busybox:latest", "command": ["sh", "-c", "echo changed"]}
                    ],
                    "restartPolicy": "Never",
                }
            },
        }
    }


def limit_job(cm: Mapping[str, Any], *, sequence: int) -> dict[str, Any]:
    meta = cm["metadata"]
    body: dict[str, Any] = dict(
        jobs.build_job(
            owner={"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            template=job_template(),
            sequence=sequence,
            changed=[f"ConfigMap/{meta['name']}:*"],
            hashes=[str(meta.get("resourceVersion", ""))],
        )
    )
    labels = body["metadata"]["labels"]
    del labels[jobs.OWNER_LABEL]
    labels[LIMIT_OWNER_LABEL] = meta["name"]
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return body


class LimitClient:
    def __init__(self, *, t: transport.Transport, namespace: str, workers: int) -> None:
        self._t = t
        self._ns = namespace
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="create")

    def _create(self, cm: Mapping[str, Any]) -> None:
        # The resourceVersion numbers the change, so the name is deterministic like the operator's.
        body = limit_job(cm, sequence=int(cm["metadata"]["resourceVersion"]))
        try:
            self._t.request("POST", f"/apis/batch/v1/namespaces/{self._ns}/jobs", body=body)
        except transport.ApiError as exc:
            log.warning("create failed: %s", exc)

    def run(self) -> None:
        path = f"/api/v1/namespaces/{self._ns}/configmaps"
        listed = self._t.request("GET", path, query={"labelSelector": LIMIT_SELECTOR, "limit": 1})
        rv = listed["metadata"]["resourceVersion"]
        print("ready", flush=True)
        while True:
            query = {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": rv,
                "labelSelector": LIMIT_SELECTOR,
                "timeoutSeconds": 3600,
            }
            try:
                for event in self._t.stream(path, query=query, read_timeout=3700):
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") == "MODIFIED":
                        self._pool.submit(self._create, obj)
            except transport.ApiError as exc:
                log.warning("watch ended: %s", exc)
                if exc.gone:
                    listed = self._t.request("GET", path, query={"labelSelector": LIMIT_SELECTOR, "limit": 1})
                    rv = listed["metadata"]["resourceVersion"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    api = transport.load_api_client(kubeconfig=args.kubeconfig)
    LimitClient(t=transport.Transport(api), namespace=args.namespace, workers=args.workers).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
