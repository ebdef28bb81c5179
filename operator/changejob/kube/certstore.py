"""API access for the operator-managed webhook certificate.

``SecretStore`` keeps the certificate in one ``kubernetes.io/tls`` Secret that all replicas share.
Its writes are race-safe: a create that loses to another replica (AlreadyExists) and a replace that
loses (Conflict on resourceVersion) both return what the winner stored, so every replica converges on
one certificate. ``WebhookConfigs`` patches the CA bundle into the named Validating- and
MutatingWebhookConfigurations, only where it differs.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s_client

from changejob.kube import resources, transport

log = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
LABELS = {"app.kubernetes.io/name": "kube-changejob", "app.kubernetes.io/component": "webhook"}


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """The Secret's decoded data and the resourceVersion it was read at."""

    data: dict[str, bytes]
    resource_version: str


def _decode(secret: Mapping[str, Any]) -> Stored:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    return Stored(data=data, resource_version=str(secret["metadata"].get("resourceVersion", "")))


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


class SecretStore:
    """One Secret (type kubernetes.io/tls plus ca.crt) holding the webhook certificate."""

    def __init__(self, api_client: k8s_client.ApiClient, *, namespace: str, name: str) -> None:
        self._t = transport.Transport(api_client)
        self.namespace = namespace
        self.name = name

    @property
    def _collection(self) -> str:
        return resources.SECRET.path(self.namespace)

    @property
    def _path(self) -> str:
        return resources.SECRET.path(self.namespace, self.name)

    def _body(self, data: Mapping[str, bytes], resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "labels": dict(LABELS)}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta,
            "data": _encode(data),
        }

    def read(self) -> Stored | None:
        try:
            secret = self._t.request(
                "GET", self._path, span_resource="secrets", namespace=self.namespace, name=self.name
            )
        except transport.ApiError as exc:
            if exc.not_found:
                return None
            raise
        return _decode(secret)

    def _read_winner(self) -> Stored:
        stored = self.read()
        if stored is None:
            raise RuntimeError(f"secret {self.namespace}/{self.name} vanished during a write race")
        return stored

    def create(self, data: Mapping[str, bytes]) -> Stored:
        """Create the Secret; if another replica was faster, return what it stored."""
        try:
            secret = self._t.request(
                "POST",
                self._collection,
                body=self._body(data),
                span_resource="secrets",
                namespace=self.namespace,
                name=self.name,
            )
        except transport.ApiError as exc:
            if not exc.already_exists:
                raise
            return self._read_winner()
        return _decode(secret)

    def replace(self, data: Mapping[str, bytes], *, resource_version: str) -> Stored:
        """Replace the Secret read at ``resource_version``; on a Conflict return the winner's."""
        try:
            secret = self._t.request(
                "PUT",
                self._path,
                body=self._body(data, resource_version),
                span_resource="secrets",
                namespace=self.namespace,
                name=self.name,
            )
        except transport.ApiError as exc:
            if not exc.conflict:
                raise
            return self._read_winner()
        return _decode(secret)


def ca_bundle_patch(config: Mapping[str, Any], ca_bundle: str) -> list[dict[str, Any]]:
    """JSON Patch setting every webhook's clientConfig.caBundle to ``ca_bundle`` where it differs.

    Each change is guarded by a ``test`` of the webhook's name at that index, so a configuration that
    changed since it was read fails the patch instead of receiving a bundle at the wrong entry.
    """
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(config.get("webhooks") or ()):
        if (hook.get("clientConfig") or {}).get("caBundle") == ca_bundle:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_bundle})
    return ops


class WebhookConfigs:
    """The webhook configurations whose caBundle the operator keeps in step with its CA."""

    def __init__(self, api_client: k8s_client.ApiClient, *, validating: str | None, mutating: str | None) -> None:
        self._t = transport.Transport(api_client)
        self._paths = [
            rtype.path(name=name)
            for rtype, name in ((resources.VALIDATING_WEBHOOKS, validating), (resources.MUTATING_WEBHOOKS, mutating))
            if name
        ]

    def ensure_ca_bundle(self, ca_bundle_pem: bytes) -> int:
        """Patch the bundle in where it differs; returns how many webhooks were changed."""
        encoded = base64.b64encode(ca_bundle_pem).decode()
        return sum(self._ensure_one(path, encoded) for path in self._paths)

    def _ensure_one(self, path: str, encoded: str, attempts: int = 3) -> int:
        for attempt in range(attempts):
            try:
                config = self._t.request("GET", path, span_resource="webhookconfigurations")
            except transport.ApiError as exc:
                if exc.not_found:
                    log.warning("webhook configuration %s not found; caBundle not set", path)
                    return 0
                raise
            ops = ca_bundle_patch(config, encoded)
            if not ops:
                return 0
            try:
                self._t.request("PATCH", path, body=ops, content_type=JSON_PATCH, span_resource="webhookconfigurations")
            except transport.ApiError as exc:
                # a failed ``test`` op: the list changed under us; read it again
                if exc.status != 422 or attempt == attempts - 1:
                    raise
                continue
            log.info("patched caBundle of %d webhook(s) in %s", len(ops) // 2, path)
            return len(ops) // 2
        return 0
