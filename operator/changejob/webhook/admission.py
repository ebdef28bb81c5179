"""Admission review of ChangeTriggeredJobs: validation, tenancy and defaulting.

``review`` answers the validating webhook. A spec is rejected (400) when it does not parse, names a
kind the API server does not serve, gets the namespace of a watched resource wrong for its scope, or
carries a job template the API server would not accept as a Job (a server-side dry-run create). It is
rejected (403) when the requesting user could not ``get`` a watched object or ``create`` Jobs in the
CTJ's namespace: a CTJ must not become a way to observe, or act on, what its author cannot. Every
problem is collected and reported at once.

``default`` answers the mutating webhook with a JSON Patch filling spec defaults. It never touches
metadata: an annotation or label added here would show up as drift in every GitOps tool.

The API server is reached only through the ``Resolver``, ``AccessChecker`` and ``DryRunJob``
arguments (``changejob.kube.discovery.Discovery``, ``changejob.kube.access``), so this module is
tested with small in-memory implementations of them.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from changejob.domain import api

VALIDATE_PATH = "/validate-ctj"
MUTATE_PATH = "/mutate-ctj"
DEFAULTS: Mapping[str, Any] = {
    "condition": api.DEFAULT_CONDITION.value,
    "cooldown": f"{int(api.DEFAULT_COOLDOWN.total_seconds())}s",
    "history": api.DEFAULT_HISTORY,
}
JOB_NAME_PREFIX_MAX = 52  # a generated Job name must stay a 63-character label value

Response = dict[str, Any]


class ResourceType(Protocol):
    """What the resolver knows of a kind (``changejob.kube.resources.ResourceType`` has this shape)."""

    @property
    def group(self) -> str: ...

    @property
    def plural(self) -> str: ...

    @property
    def namespaced(self) -> bool: ...


class Resolver(Protocol):
    def resolve(self, *, api_version: str, kind: str) -> ResourceType | None: ...


class AccessChecker(Protocol):
    def allowed(
        self,
        *,
        user: Mapping[str, Any],
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None,
    ) -> bool: ...


DryRunJob = Callable[[str, Mapping[str, Any]], "str | None"]


@dataclasses.dataclass(frozen=True, slots=True)
class Permission:
    """One thing the requesting user must be allowed to do."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None

    def describe(self, username: str) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        text = f'user "{username}" may not {self.verb} {what}'
        if self.name:
            text += f' "{self.name}"'
        if self.namespace:
            text += f' in namespace "{self.namespace}"'
        return text


def allow(uid: str) -> Response:
    return {"uid": uid, "allowed": True}


def deny(uid: str, *, code: int, message: str) -> Response:
    reason = {400: "BadRequest", 403: "Forbidden"}.get(code, "InternalError")
    return {
        "uid": uid,
        "allowed": False,
        "status": {"status": "Failure", "code": code, "reason": reason, "message": message},
    }


def _spec_of(obj: Any) -> Any:
    return obj.get("spec") if isinstance(obj, Mapping) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _resources(spec: Mapping[str, Any], *, spec_errors: list[str]) -> list[tuple[int, Mapping[str, Any]]]:
    """Entries of spec.resources well-formed enough to look up; parse_spec reported the others.

    An entry whose apiVersion or kind parse_spec rejected is not sent to discovery at all.
    """
    entries = spec.get("resources")
    if not isinstance(entries, list):
        return []
    rejected = {error.split(":", 1)[0] for error in spec_errors}
    return [
        (i, r)
        for i, r in enumerate(entries)
        if isinstance(r, Mapping)
        and _str(r.get("apiVersion"))
        and _str(r.get("kind"))
        and not {f"spec.resources[{i}].apiVersion", f"spec.resources[{i}].kind"} & rejected
    ]


def _check_resources(
    spec: Mapping[str, Any], *, resolver: Resolver, spec_errors: list[str]
) -> tuple[list[str], list[Permission]]:
    """Kind and namespace errors of spec.resources, and the ``get`` each resource needs."""
    errors: list[str] = []
    needed: list[Permission] = []
    for i, entry in _resources(spec, spec_errors=spec_errors):
        api_version, kind = str(entry["apiVersion"]), str(entry["kind"])
        name, namespace = _str(entry.get("name")), _str(entry.get("namespace"))
        found = resolver.resolve(api_version=api_version, kind=kind)
        where = f"spec.resources[{i}]"
        label = f"{kind} ({api_version})" + (f' "{name}"' if name else "")
        if found is None:
            errors.append(f"{where}: resource kind does not exist: {kind} ({api_version})")
        elif found.namespaced and namespace is None:
            errors.append(f"{where}: namespace is required for namespaced resources: {label}")
        elif not found.namespaced and namespace is not None:
            errors.append(f"{where}: namespace must not be set for cluster-scoped resources: {label}")
        else:
            needed.append(
                Permission(verb="get", group=found.group, resource=found.plural, namespace=namespace, name=name)
            )
    return errors, needed


def dry_run_body(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Job the template describes, as the API server should judge it (None: no template)."""
    template = (_spec_of(obj) or {}).get("jobTemplate")
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        return None
    meta = obj.get("metadata") or {}
    owner = _str(meta.get("name")) or _str(meta.get("generateName")) or "changetriggeredjob"
    tmeta = template.get("metadata")
    job_meta: dict[str, Any] = {"generateName": owner[:JOB_NAME_PREFIX_MAX].rstrip("-.") + "-"}
    for key in ("labels", "annotations"):
        value = tmeta.get(key) if isinstance(tmeta, Mapping) else None
        if isinstance(value, Mapping):
            job_meta[key] = dict(value)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": template["spec"]}


def _name_problems(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """Why the CTJ's name cannot work (it becomes the Jobs' owner label value)."""
    name = _str((obj.get("metadata") or {}).get("name"))
    return api.name_errors(name) if name else ()


def _check_job_template(obj: Mapping[str, Any], *, namespace: str, dry_run_job: DryRunJob) -> list[str]:
    body = dry_run_body(obj)
    if body is None:
        return []
    problem = dry_run_job(namespace, body)
    return [] if problem is None else [f"spec.jobTemplate: {problem}"]


def validate(
    obj: Mapping[str, Any], *, namespace: str, resolver: Resolver, dry_run_job: DryRunJob
) -> tuple[list[str], list[Permission]]:
    """Every validation error of the CTJ, and the permissions its author needs if it is valid."""
    spec = _spec_of(obj)
    if not isinstance(spec, Mapping):
        return ["spec: required"], []
    errors = [f"metadata.name: {problem}" for problem in _name_problems(obj)]
    try:
        api.parse_spec(spec)
    except api.SpecError as exc:
        errors.extend(exc.errors)
    resource_errors, needed = _check_resources(spec, resolver=resolver, spec_errors=errors)
    errors += resource_errors
    errors += _check_job_template(obj, namespace=namespace, dry_run_job=dry_run_job)
    needed.append(Permission(verb="create", group="batch", resource="jobs", namespace=namespace, name=None))
    return errors, needed


def missing_permissions(user: Mapping[str, Any], needed: list[Permission], *, access: AccessChecker) -> list[str]:
    """Descriptions of the permissions in ``needed`` that ``user`` lacks, each asked once."""
    username = str(user.get("username", ""))
    unique = list(dict.fromkeys(needed))
    return [
        p.describe(username)
        for p in unique
        if not access.allowed(
            user=user, verb=p.verb, group=p.group, resource=p.resource, namespace=p.namespace, name=p.name
        )
    ]


def _needs_review(request: Mapping[str, Any]) -> bool:
    """CREATE always; UPDATE only when the spec changed; DELETE and CONNECT never."""
    operation = request.get("operation")
    if operation == "CREATE":
        return True
    if operation != "UPDATE":
        return False
    return bool(_spec_of(request.get("object")) != _spec_of(request.get("oldObject")))


def review(
    request: Mapping[str, Any], *, resolver: Resolver, access: AccessChecker, dry_run_job: DryRunJob
) -> Response:
    """The AdmissionReview ``response`` of the validating webhook for ``request``."""
    uid = str(request.get("uid", ""))
    if not _needs_review(request):
        return allow(uid)
    obj = request.get("object") or {}
    namespace = _str(request.get("namespace")) or _str((obj.get("metadata") or {}).get("namespace"))
    errors, needed = validate(obj, namespace=namespace or "default", resolver=resolver, dry_run_job=dry_run_job)
    if errors:
        return deny(uid, code=400, message="; ".join(errors))
    missing = missing_permissions(request.get("userInfo") or {}, needed, access=access)
    if missing:
        return deny(uid, code=403, message="; ".join(missing))
    return allow(uid)


def default_patch(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch operations filling absent spec defaults; none for what is already set."""
    ops = [
        {"op": "add", "path": f"/spec/{key}", "value": value}
        for key, value in DEFAULTS.items()
        if spec.get(key) is None
    ]
    resources = spec.get("resources")
    if isinstance(resources, list):
        ops += [
            {"op": "add", "path": f"/spec/resources/{i}/fields", "value": list(api.DEFAULT_FIELDS)}
            for i, entry in enumerate(resources)
            if isinstance(entry, Mapping) and entry.get("fields") is None
        ]
    return ops


def default(request: Mapping[str, Any]) -> Response:
    """The AdmissionReview ``response`` of the mutating webhook: spec defaults as a JSON Patch."""
    uid = str(request.get("uid", ""))
    response = allow(uid)
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return response
    spec = _spec_of(request.get("object"))
    ops = default_patch(spec) if isinstance(spec, Mapping) else []
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(ops)).decode()
    return response


class Admission:
    """Routes the webhook paths to ``review`` and ``default`` with the given API-backed helpers."""

    def __init__(self, *, resolver: Resolver, access: AccessChecker, dry_run_job: DryRunJob) -> None:
        self._resolver = resolver
        self._access = access
        self._dry_run_job = dry_run_job

    def __call__(self, path: str, request: Mapping[str, Any]) -> Response:
        if path == VALIDATE_PATH:
            return review(request, resolver=self._resolver, access=self._access, dry_run_job=self._dry_run_job)
        if path == MUTATE_PATH:
            return default(request)
        raise LookupError(f"no admission handler for {path}")
