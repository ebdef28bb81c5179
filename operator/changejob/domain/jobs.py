"""Jobs a CTJ creates: their deterministic names, their bodies, their phase and their pruning.

The Job name is derived from the CTJ's uid and the trigger's sequence number, so retrying a create,
or a second replica racing the first, hits ``AlreadyExists`` instead of starting a duplicate Job.
A Job already made is seen through a :class:`JobView` (what the runtime's Job index keeps per Job).
Everything here is plain data in, plain data out; the writes happen in ``kube/``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import xxhash

from changejob.domain import api, bodies, conditions

__all__ = [
    "CHANGED_ANNOTATION",
    "HASHES_ANNOTATION",
    "OWNER_LABEL",
    "TRACEPARENT_ANNOTATION",
    "TRIGGER_ANNOTATION",
    "JobPhase",
    "JobView",
    "build_job",
    "covered_hashes",
    "job_name",
    "job_phase",
    "owned_by",
    "prune_plan",
    "view",
    "with_traceparent",
]

OWNER_LABEL: Final = "changejob.dev/owner"
TRIGGER_ANNOTATION: Final = "changejob.dev/trigger"
CHANGED_ANNOTATION: Final = "changejob.dev/changed"
HASHES_ANNOTATION: Final = "changejob.dev/hashes"
TRACEPARENT_ANNOTATION: Final = "traceparent"

JobPhase = Literal["Active", "Succeeded", "Failed"]
ACTIVE: Final[JobPhase] = "Active"
SUCCEEDED: Final[JobPhase] = "Succeeded"
FAILED: Final[JobPhase] = "Failed"

MAX_NAME_LENGTH: Final = 63  # a Job's name is also a label value on its Pods
SUFFIX_LENGTH: Final = 10
_PREFIX_LENGTH: Final = MAX_NAME_LENGTH - SUFFIX_LENGTH - 1
_BASE36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_SUFFIX_SPACE: Final = 36**SUFFIX_LENGTH
_NOT_LABEL_CHARS: Final = re.compile(r"[^a-z0-9-]")

_SUCCESS_CONDITIONS: Final = ("Complete", "SuccessCriteriaMet")
_FAILURE_CONDITIONS: Final = ("Failed", "FailureTarget")
_EPOCH: Final = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def job_name(*, ctj_name: str, ctj_uid: str, sequence: int) -> str:
    """``<ctj name, shortened>-<10 base36 characters>``: a DNS-1123 label of at most 63 characters.

    The suffix is xxh3-64 of ``"<uid>/<sequence>"``, so the name is the same on every replica and
    every retry, and differs between triggers and between CTJs that reuse a name.
    """
    prefix = _NOT_LABEL_CHARS.sub("-", ctj_name.lower())[:_PREFIX_LENGTH].strip("-")
    suffix = _base36(xxhash.xxh3_64_intdigest(f"{ctj_uid}/{sequence}".encode()))
    return f"{prefix}-{suffix}" if prefix else suffix


def _base36(number: int) -> str:
    number %= _SUFFIX_SPACE
    digits = []
    for _ in range(SUFFIX_LENGTH):
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    return "".join(reversed(digits))


def build_job(
    *,
    owner: bodies.ObjectMeta,
    template: Mapping[str, Any],
    sequence: int,
    changed: Sequence[str],
    hashes: Sequence[str],
    traceparent: str | None = None,
) -> bodies.Job:
    """The batch/v1 Job for trigger number ``sequence`` of the CTJ ``owner`` (its metadata), made from
    ``template`` (its ``spec.jobTemplate``); the inputs are never modified.

    Labels and annotations come from ``template.metadata`` plus the owner label, the trigger,
    changed and hashes annotations (names and hashes only, never values) and ``traceparent`` when
    given; the spec is a deep copy of ``template.spec``; an owner reference to the CTJ makes
    deleting the CTJ delete its Jobs.
    """
    name = _required(owner, "name")
    namespace = _required(owner, "namespace")
    uid = _required(owner, "uid")
    problems = api.name_errors(name)
    if problems:
        raise ValueError(f'CTJ name "{name}" cannot label its Jobs: {"; ".join(problems)}')
    template_metadata = template.get("metadata") or {}

    labels = {**(template_metadata.get("labels") or {}), OWNER_LABEL: name}
    annotations = {
        **(template_metadata.get("annotations") or {}),
        TRIGGER_ANNOTATION: str(sequence),
        CHANGED_ANNOTATION: ",".join(changed),
        HASHES_ANNOTATION: ",".join(hashes),
    }
    if traceparent:
        annotations[TRACEPARENT_ANNOTATION] = traceparent
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(ctj_name=name, ctj_uid=uid, sequence=sequence),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": api.API_VERSION,
                    "kind": api.KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(dict(template.get("spec") or {})),
    }


def with_traceparent(job: bodies.Job, traceparent: str | None) -> bodies.Job:
    """``job`` carrying the trace context it is created in (annotation ``traceparent``), if any."""
    if not traceparent:
        return job
    meta = job["metadata"]
    return {
        **job,
        "metadata": {**meta, "annotations": {**meta.get("annotations", {}), TRACEPARENT_ANNOTATION: traceparent}},
    }


def _required(metadata: bodies.ObjectMeta, key: str) -> str:
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the CTJ has no metadata.{key}; a Job needs it")
    return value


def job_phase(job: Mapping[str, Any]) -> JobPhase:
    """``Succeeded`` (Complete or SuccessCriteriaMet is True), ``Failed`` (Failed or FailureTarget
    is True) or ``Active``."""
    found = (job.get("status") or {}).get("conditions") or ()
    true_types = {c.get("type") for c in found if isinstance(c, Mapping) and c.get("status") == "True"}
    if any(kind in true_types for kind in _SUCCESS_CONDITIONS):
        return SUCCEEDED
    if any(kind in true_types for kind in _FAILURE_CONDITIONS):
        return FAILED
    return ACTIVE


@dataclasses.dataclass(frozen=True, slots=True)
class JobView:
    """What the operator knows of one Job it made (the runtime's Job index keeps one per Job)."""

    name: str
    phase: JobPhase = ACTIVE
    sequence: int = -1  # the trigger annotation; -1 when absent or not a number
    created: str = ""  # creationTimestamp as sent by the server
    owner_uid: str = ""  # the uid of its controlling owner
    deleting: bool = False  # it has a deletionTimestamp


def view(job: Mapping[str, Any]) -> JobView:
    """The :class:`JobView` of a Job body."""
    metadata = job.get("metadata") or {}
    owners = [o.get("uid", "") for o in metadata.get("ownerReferences") or () if o.get("controller")]
    return JobView(
        name=str(metadata.get("name") or ""),
        phase=job_phase(job),
        sequence=_sequence(metadata.get("annotations") or {}),
        created=str(metadata.get("creationTimestamp") or ""),
        owner_uid=str(owners[0]) if owners else "",
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def owned_by(job: Mapping[str, Any], uid: str) -> bool:
    """Whether ``job`` has an owner reference to the object with ``uid``."""
    return any(o.get("uid") == uid for o in (job.get("metadata") or {}).get("ownerReferences") or ())


def covered_hashes(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The resource hashes a Job was made for (its ``changejob.dev/hashes`` annotation), in spec order."""
    text = ((job.get("metadata") or {}).get("annotations") or {}).get(HASHES_ANNOTATION, "")
    return tuple(str(text).split(","))


def prune_plan(*, jobs: Sequence[JobView], history: int) -> list[str]:
    """Names of the Jobs to delete so that the newest ``history`` remain.

    Newest first means the highest trigger number, then the latest creationTimestamp, then the
    name. Of the Jobs beyond ``history`` only finished ones are deleted, never an Active one; Jobs
    already being deleted are neither counted nor deleted again.
    """
    if history < 0:
        raise ValueError(f"history must not be negative, got {history}")
    live = [job for job in jobs if not job.deleting]
    live.sort(key=_age_key, reverse=True)
    return [job.name for job in live[history:] if job.phase != ACTIVE and job.name]


def _age_key(job: JobView) -> tuple[int, datetime.datetime, str]:
    return (job.sequence, _created(job.created), job.name)


def _sequence(annotations: Mapping[str, Any]) -> int:
    try:
        return int(annotations.get(TRIGGER_ANNOTATION, -1))
    except (TypeError, ValueError):
        return -1


def _created(value: object) -> datetime.datetime:
    if not isinstance(value, str):
        return _EPOCH
    try:
        return conditions.parse_time(value)
    except ValueError:
        return _EPOCH
