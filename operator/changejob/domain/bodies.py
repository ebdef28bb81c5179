"""Typed views of the API objects the operator reads and writes, as the JSON they are.

Objects travel as the plain dicts orjson parses (no model classes: at 10 000 CTJs a model tree costs
more than the work itself); these ``TypedDict``s give them names and shapes for the type checker at
no run-time cost. Only the fields the operator touches are listed; every key is optional
(``total=False``) because the API server omits empty ones, so code reads them with ``.get``.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "Condition",
    "Ctj",
    "CtjStatus",
    "FieldHash",
    "Job",
    "JobCondition",
    "JobStatus",
    "Lease",
    "LeaseSpec",
    "ObjectMeta",
    "OwnerReference",
    "ResourceHash",
]


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]


class Condition(TypedDict, total=False):
    """A ``metav1.Condition``."""

    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class FieldHash(TypedDict, total=False):
    """``status.resourceHashes[].fields[]``: one selected field's hash and its reference."""

    field: str
    hash: str
    lastTriggeredHash: str


class ResourceHash(TypedDict, total=False):
    """``status.resourceHashes[]``: one watched resource, as observed and as last triggered."""

    apiVersion: str
    kind: str
    name: str
    namespace: str
    fields: list[FieldHash]
    hash: str
    lastTriggeredHash: str
    changed: bool
    state: str
    message: str


class CtjStatus(TypedDict, total=False):
    observedGeneration: int
    resourceHashes: list[ResourceHash]
    triggerCount: int
    lastTriggeredTime: str
    nextTriggerTime: str
    lastJobName: str
    lastJobStatus: str
    conditions: list[Condition]


class Ctj(TypedDict, total=False):
    """A ChangeTriggeredJob; ``spec`` is parsed and validated by ``api.parse_spec``."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: CtjStatus


class JobCondition(TypedDict, total=False):
    type: str
    status: str


class JobStatus(TypedDict, total=False):
    conditions: list[JobCondition]


class Job(TypedDict, total=False):
    """A batch/v1 Job; ``spec`` is the CTJ's ``jobTemplate.spec``, passed through untouched."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: JobStatus


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(TypedDict, total=False):
    """A coordination.k8s.io/v1 Lease (see ``kube/leases.py`` for the two kinds the operator keeps)."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: LeaseSpec
