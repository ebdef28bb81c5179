"""What the cluster benchmark creates: watched objects, CTJs, and the baseline's ConfigMaps.

CTJ ``i`` (``ctj-00042``) watches objects ``2i`` and ``2i+1``, so N CTJs watch 2N distinct objects.
Object ``j`` is a ConfigMap, Secret or Deployment by ``j % 10`` (50 % / 30 % / 20 %); consecutive
pairs give every mix: CTJs with ``i % 5`` in 0, 1 watch two ConfigMaps, 2 a ConfigMap and a Secret,
3 two Secrets, 4 two Deployments. Selected fields vary the same way (``data``, the whole object,
container images). Deployments have zero replicas: they cost the controller manager a ReplicaSet
each, no Pods. Every CTJ has ``cooldown: 0s``.
"""

from __future__ import annotations

import base64
from typing import Any

from limit_client import LIMIT_SELECTOR, job_template

SET_LABEL = "bench.changejob.dev/set"
CTJ_API = "triggers.changejob.dev/v1alpha"


def object_kind(j: int) -> str:
    r = j % 10
    return "ConfigMap" if r < 5 else "Secret" if r < 8 else "Deployment"


def object_name(j: int) -> str:
    return f"obj-{j:05d}"


def ctj_name(i: int) -> str:
    return f"ctj-{i:05d}"


def limit_name(k: int) -> str:
    return f"limit-{k:04d}"


def collection(kind: str, namespace: str) -> str:
    return {
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps",
        "Secret": f"/api/v1/namespaces/{namespace}/secrets",
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "ChangeTriggeredJob": f"/apis/triggers.changejob.dev/v1alpha/namespaces/{namespace}/changetriggeredjobs",
    }[kind]


def object_path(j: int, namespace: str) -> str:
    return f"{collection(object_kind(j), namespace)}/{object_name(j)}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def watched_object(j: int, namespace: str) -> dict[str, Any]:
    kind = object_kind(j)
    meta = {"name": object_name(j), "namespace": namespace, "labels": {SET_LABEL: "watched"}}
    if kind == "ConfigMap":
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "data": {"app.properties": f"server.port=8080\nshard={j}\n", "rev": "0"},
        }
    if kind == "Secret":
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "type": "Opaque",
            "data": {"password": _b64(f"secret-{j}"), "rev": _b64("0")},
        }
    labels = {"app": object_name(j)}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0.0"}]},
            },
        },
    }


def fields_of(j: int) -> list[str] | None:
    kind = object_kind(j)
    if kind == "ConfigMap":
        return ["data"] if j % 2 == 0 else None  # None: the whole object
    if kind == "Secret":
        return ["data"]
    return ["spec.template.spec.containers[*].image"]


def ctj(i: int, namespace: str) -> dict[str, Any]:
    resources = []
    for j in (2 * i, 2 * i + 1):
        ref: dict[str, Any] = {
            "apiVersion": "apps/v1" if object_kind(j) == "Deployment" else "v1",
            "kind": object_kind(j),
            "name": object_name(j),
            "namespace": namespace,
        }
        selected = fields_of(j)
        if selected is not None:
            ref["fields"] = selected
        resources.append(ref)
    return {
        "apiVersion": CTJ_API,
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": ctj_name(i), "namespace": namespace, "labels": {SET_LABEL: "ctj"}},
        "spec": {"jobTemplate": job_template(), "resources": resources, "cooldown": "0s"},
    }


def change(j: int, revision: int) -> dict[str, Any]:
    """A merge patch that changes object ``j``'s selected fields (and so its hash)."""
    kind = object_kind(j)
    if kind == "ConfigMap":
        return {"data": {"rev": str(revision)}}
    if kind == "Secret":
        return {"data": {"rev": _b64(str(revision))}}
    return {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": f"registry.example.com/app:1.0.{revision}"}]}}
        }
    }


def limit_configmap(k: int, namespace: str) -> dict[str, Any]:
    key, value = LIMIT_SELECTOR.split("=")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": limit_name(k), "namespace": namespace, "labels": {key: value}},
        "data": {"app.properties": f"server.port=8080\nlimit={k}\n", "rev": "0"},
    }


def configmap_ctjs(n: int) -> list[int]:
    """CTJs (of the first n) whose first object is a ConfigMap: the latency samples patch these."""
    return [i for i in range(n) if object_kind(2 * i) == "ConfigMap"]
