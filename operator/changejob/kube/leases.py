"""The coordination.k8s.io/v1 Leases behind shard ownership: names, bodies and the four calls.

Two kinds of Lease live in the leader-election namespace, told apart by the label ``changejob.dev/role``:

- ``kube-changejob-member-<identity>`` (role ``member``): one per replica, renewed every retry period;
  it says "this replica is alive".
- ``kube-changejob-shard-<n>`` (role ``shard``, plus ``changejob.dev/shard=<n>``): one per shard; its
  ``holderIdentity`` names the replica that owns the shard. Written only on handover, never renewed.

One labelled list returns both kinds. Every write carries the object's resourceVersion (a
compare-and-swap) and is counted in ``changejob_lease_writes_total{result}``. Timestamps written here
are for people (``kubectl get leases``); the runtime never compares them with its own clock.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changejob.domain import bodies
from changejob.kube import resources, transport
from changejob.telemetry import metrics

API_VERSION = resources.LEASE.api_version
ROLE_LABEL = "changejob.dev/role"
SHARD_LABEL = "changejob.dev/shard"
MEMBER_ROLE = "member"
SHARD_ROLE = "shard"
MEMBER_PREFIX = "kube-changejob-member-"
SHARD_PREFIX = "kube-changejob-shard-"
SELECTOR = f"{ROLE_LABEL} in ({MEMBER_ROLE},{SHARD_ROLE})"
_MAX_NAME = 253
_INVALID = re.compile(r"[^a-z0-9.-]+")

Lease = bodies.Lease


def member_name(identity: str) -> str:
    """A valid object name for ``identity``'s member Lease (the identity itself is in the spec).

    Lower-cased, invalid characters replaced by ``-``; an identity that had to be changed or
    shortened gets a hash suffix so two identities never share a Lease.
    """
    clean = _INVALID.sub("-", identity.lower()).strip("-.") or "x"
    name = MEMBER_PREFIX + clean
    if clean == identity and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11]}-{digest}"


def shard_name(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def micro_time(now: datetime) -> str:
    """``now`` (aware, UTC) as a metav1.MicroTime string."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def role(lease: Lease) -> str:
    return str(((lease.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) or "")


def name_of(lease: Lease) -> str:
    return str(lease["metadata"]["name"])


def resource_version(lease: Lease) -> str:
    return str(lease["metadata"].get("resourceVersion") or "")


def holder(lease: Lease | None) -> str:
    """The holder identity, ``""`` for a released (or absent) Lease."""
    if lease is None:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def lease_seconds(lease: Lease, default: float) -> float:
    value = (lease.get("spec") or {}).get("leaseDurationSeconds")
    return float(value) if isinstance(value, int) and value > 0 else default


def shard_number(lease: Lease) -> int | None:
    """The shard a shard Lease stands for, or None if the Lease is not a well-formed shard Lease."""
    labels = (lease.get("metadata") or {}).get("labels") or {}
    value = str(labels.get(SHARD_LABEL) or "")
    if not value.isdigit() or name_of(lease) != shard_name(int(value)):
        return None
    return int(value)


def member_body(*, namespace: str, identity: str, duration: float, now: datetime) -> Lease:
    stamp = micro_time(now)
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": {"name": member_name(identity), "namespace": namespace, "labels": {ROLE_LABEL: MEMBER_ROLE}},
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_seconds(duration),
            "acquireTime": stamp,
            "renewTime": stamp,
        },
    }


def shard_body(*, namespace: str, shard: int, identity: str, duration: float, now: datetime) -> Lease:
    stamp = micro_time(now)
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": shard_name(shard),
            "namespace": namespace,
            "labels": {ROLE_LABEL: SHARD_ROLE, SHARD_LABEL: str(shard)},
        },
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_seconds(duration),
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        },
    }


def renewed(lease: Lease, *, duration: float, now: datetime) -> Lease:
    """``lease`` with a new renewTime; resourceVersion kept, so the update is a compare-and-swap."""
    out = copy.deepcopy(lease)
    spec = out.get("spec") or {}
    spec.update({"renewTime": micro_time(now), "leaseDurationSeconds": duration_seconds(duration)})
    out["spec"] = spec
    return out


def taken(lease: Lease, *, identity: str, duration: float, now: datetime) -> Lease:
    """``lease`` acquired by ``identity`` (a transition is counted when the holder changes)."""
    out = copy.deepcopy(lease)
    spec = out.get("spec") or {}
    if spec.get("holderIdentity") != identity:
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    stamp = micro_time(now)
    spec.update(
        {
            "holderIdentity": identity,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseDurationSeconds": duration_seconds(duration),
        }
    )
    out["spec"] = spec
    return out


def released(lease: Lease, *, now: datetime) -> Lease:
    """``lease`` with no holder: the next owner may take it at once."""
    out = copy.deepcopy(lease)
    spec = out.get("spec") or {}
    spec.pop("holderIdentity", None)
    spec.pop("acquireTime", None)
    spec["renewTime"] = micro_time(now)
    out["spec"] = spec
    return out


@dataclass(frozen=True)
class Snapshot:
    """One list of the membership Leases."""

    members: list[Lease]
    shards: dict[int, Lease]


class Leases:
    """The Lease calls of one replica, in one namespace, through an explicit transport."""

    def __init__(
        self, t: transport.Transport, *, namespace: str, timeout: tuple[float, float] = transport.DEFAULT_TIMEOUT
    ) -> None:
        self._t = t
        self.namespace = namespace
        self._timeout = timeout

    def snapshot(self) -> Snapshot:
        """Member and shard Leases in one call (a few dozen small objects: no pagination)."""
        page = self._t.request(
            "GET",
            resources.LEASE.path(self.namespace),
            query={"labelSelector": SELECTOR},
            timeout=self._timeout,
            span_resource="leases",
            namespace=self.namespace,
        )
        members: list[Lease] = []
        shards: dict[int, Lease] = {}
        for item in (page or {}).get("items") or ():
            if role(item) == MEMBER_ROLE:
                members.append(item)
            elif role(item) == SHARD_ROLE and (n := shard_number(item)) is not None:
                shards[n] = item
        return Snapshot(members=members, shards=shards)

    def get(self, name: str) -> Lease | None:
        try:
            lease: Lease = self._t.request(
                "GET",
                resources.LEASE.path(self.namespace, name),
                timeout=self._timeout,
                span_resource="leases",
                namespace=self.namespace,
                name=name,
            )
        except transport.ApiError as exc:
            if exc.not_found:
                return None
            raise
        return lease

    def create(self, lease: Lease) -> Lease:
        return self._write("POST", None, lease)

    def update(self, lease: Lease) -> Lease:
        """PUT with the lease's resourceVersion: raises ApiError(conflict) if it changed meanwhile."""
        return self._write("PUT", name_of(lease), lease)

    def delete(self, lease: Lease) -> None:
        """Delete ``lease`` if it is still the version given; gone already counts as deleted."""
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"resourceVersion": resource_version(lease)},
        }
        try:
            self._write("DELETE", name_of(lease), body)
        except transport.ApiError as exc:
            if not exc.not_found:
                raise

    def _write(self, method: str, name: str | None, body: Mapping[str, Any]) -> Lease:
        """``method`` on the Lease ``name`` (None: the collection) with ``body``; counted."""
        try:
            out: Lease = self._t.request(
                method,
                resources.LEASE.path(self.namespace, name),
                body=body,
                timeout=self._timeout,
                span_resource="leases",
                namespace=self.namespace,
                name=name or str(body["metadata"]["name"]),
            )
        except transport.ApiError as exc:
            metrics.lease_writes_total.labels(
                result="conflict" if exc.conflict or exc.already_exists else "error"
            ).inc()
            raise
        metrics.lease_writes_total.labels(result="ok").inc()
        return out
