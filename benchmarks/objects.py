"""Realistic Kubernetes objects, shaped like what a watch delivers (metadata, managedFields, status).

Used by the micro benchmarks (as dicts, exactly what the operator's watch parser hands over) and,
in smaller form, as the bodies the cluster benchmark creates.
"""

from __future__ import annotations

import base64
import random
import string
from typing import Any

_FIELDS_V1: dict[str, Any] = {"f:data": {".": {}, "f:app.properties": {}, "f:important-key": {}, "f:log-level": {}}}


def _metadata(*, name: str, namespace: str, rv: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": "6f0e2a7c-3b1d-4d52-9a1e-4f1c2b9d8e7a",
        "resourceVersion": str(rv),
        "creationTimestamp": "2025-01-01T12:00:00Z",
        "labels": labels or {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2025-01-01T12:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": _FIELDS_V1,
            }
        ],
    }


def configmap(name: str = "app-config", namespace: str = "default") -> dict[str, Any]:
    """A small ConfigMap (about 0.8 KB as JSON)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(name=name, namespace=namespace, rv=101),
        "data": {
            "app.properties": "server.port=8080\nserver.threads=16\nfeature.checkout=true\n",
            "important-key": "v1",
            "log-level": "info",
        },
    }


def secret(name: str = "app-secret", namespace: str = "default") -> dict[str, Any]:
    """A small Opaque Secret with base64 data."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(name=name, namespace=namespace, rv=102),
        "data": {
            "username": b64("shop"),
            "password": b64("s3cr3t-p4ssw0rd-0123456789"),
            "api-token": b64("tok_" + "a1b2c3d4" * 6),
        },
    }


def _container(index: int) -> dict[str, Any]:
    return {
        "name": f"app-{index}",
        "image": f"registry.example.com/shop/app-{index}:1.{index}.3",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--port=8080", "--log-level=info", f"--shard={index}"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": f"ENV_{k}", "value": f"value-{index}-{k}"} for k in range(18)]
        + [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": "config", "mountPath": "/config"}, {"name": "secret", "mountPath": "/secret"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def deployment(name: str = "web-app", namespace: str = "default") -> dict[str, Any]:
    """A Deployment of about 5 KB as JSON: two containers, env, probes, volumes, status."""
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name=name, namespace=namespace, rv=103) | {"generation": 4},
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"}},
                "spec": {
                    "containers": [_container(0), _container(1)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}},
                        {"name": "secret", "secret": {"secretName": "app-secret", "defaultMode": 420}},
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                },
            },
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": "2025-01-01T12:01:00Z",
                    "lastTransitionTime": "2025-01-01T12:01:00Z",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": 'ReplicaSet "web-app-7d9f8b6c5d" has successfully progressed.',
                    "lastUpdateTime": "2025-01-01T12:01:00Z",
                    "lastTransitionTime": "2025-01-01T12:00:00Z",
                },
            ],
        },
    }
    return obj


def big_configmap(name: str = "big-config", namespace: str = "default", *, kib: int = 100) -> dict[str, Any]:
    """A ConfigMap of about ``kib`` KiB: a handful of file-like values of printable text."""
    rng = random.Random(42)
    alphabet = string.ascii_letters + string.digits + " =.:\n"
    per_key = kib * 1024 // 8
    obj = configmap(name, namespace)
    obj["data"] = {f"file-{i}.conf": "".join(rng.choices(alphabet, k=per_key)) for i in range(8)}
    return obj
