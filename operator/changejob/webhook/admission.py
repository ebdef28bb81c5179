"""Admission review of ChangeTriggeredJobs: what needs the operator's knowledge of the cluster.

Most admission of a CTJ happens in the API server itself and never needs a replica to be up: the
CRD's schema and CEL rules judge its shape and fill its defaults, and the chart's
ValidatingAdmissionPolicy (``chart/templates/admission-policy.yaml``) checks tenancy with CEL's
``authorizer``. This module answers what only discovery or the Python domain can judge:

- ``REFERENCES_PATH`` (the API server calls it with ``failurePolicy: Fail``, only when a spec change
  names a kind outside the policy's table of known kinds): does each referenced kind exist, and is
  its namespace set exactly when the kind is namespaced. With ``access`` given (``--webhook-tenancy
  =webhook``, for clusters without ValidatingAdmissionPolicy), tenancy is checked here as well, with
  SubjectAccessReviews: get on each referenced object, create on Jobs, impersonate on the Jobs'
  ServiceAccount.
- ``SPEC_PATH`` (``failurePolicy: Ignore``: advice, never a gate): the domain's own parse (field
  paths) and a server-side dry-run of the Job the template describes. What cannot be checked right
  now is admitted with a warning; the operator reports the same problems in status.
- ``VALIDATE_PATH``: both at once, for a single webhook entry.

Every answer depends only on the submitted object and on discovery, never on who asked or on which
namespaces exist: the dry-run runs in the operator's own namespace, and in policy mode no
permission is looked up. So an AdmissionReview forged by anyone who can reach the port learns
nothing it could not learn from discovery (see docs/security.md). A spec is reviewed only on CREATE
and on an UPDATE that changes it; the configurations' ``matchConditions`` already keep metadata and
status writes away, and this check keeps them free when a configuration lacks them.

The API server is reached only through the ``Resolver``, ``AccessChecker`` and ``DryRunJob``
arguments (``changejob.kube.discovery.Discovery``, ``changejob.kube.access``), so this module is
tested with small in-memory implementations of them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from changejob.domain import api

log = logging.getLogger(__name__)

VALIDATE_PATH = "/validate-ctj"
REFERENCES_PATH = "/validate-ctj/references"
SPEC_PATH = "/validate-ctj/spec"
PATHS = (VALIDATE_PATH, REFERENCES_PATH, SPEC_PATH)
JOB_NAME_PREFIX_MAX = 52  # a generated Job name must stay a 63-character label value
_GENERATED_JOB = re.compile(r'^Job\.batch "[^"]*" is invalid: ')
DEFAULT_SERVICE_ACCOUNT = "default"

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


def allow(uid: str, *, warnings: list[str] | None = None) -> Response:
    response: Response = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = warnings
    return response


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


# --------------------------------------------------------------------------------------------------
# References: kinds and scopes (discovery), and what reading them takes


def _resources(spec: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """Entries of spec.resources well-formed enough to look up.

    An entry whose apiVersion or kind the domain rejects (the CRD schema refuses them too) is never
    sent to discovery, where it would become part of a URL.
    """
    entries = spec.get("resources")
    if not isinstance(entries, list):
        return []
    try:
        api.parse_spec(spec)
        rejected: set[str] = set()
    except api.SpecError as exc:
        rejected = {error.split(":", 1)[0] for error in exc.errors}
    return [
        (i, r)
        for i, r in enumerate(entries)
        if isinstance(r, Mapping)
        and _str(r.get("apiVersion"))
        and _str(r.get("kind"))
        and not {f"spec.resources[{i}].apiVersion", f"spec.resources[{i}].kind"} & rejected
    ]


def check_references(spec: Mapping[str, Any], *, resolver: Resolver) -> tuple[list[str], list[Permission]]:
    """Kind and namespace errors of spec.resources, and the ``get`` each resource needs."""
    errors: list[str] = []
    needed: list[Permission] = []
    for i, entry in _resources(spec):
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


def service_account(obj: Mapping[str, Any]) -> str:
    """The ServiceAccount the Jobs' Pods run as: the template's, or the namespace's "default"."""
    template = (_spec_of(obj) or {}).get("jobTemplate")
    pod: Any = template
    for key in ("spec", "template", "spec"):
        pod = pod.get(key) if isinstance(pod, Mapping) else None
    if not isinstance(pod, Mapping):
        return DEFAULT_SERVICE_ACCOUNT
    return _str(pod.get("serviceAccountName")) or _str(pod.get("serviceAccount")) or DEFAULT_SERVICE_ACCOUNT


def workload_permissions(obj: Mapping[str, Any], *, namespace: str) -> list[Permission]:
    """What running the CTJ's Jobs takes: creating Jobs, and acting as their ServiceAccount.

    Whoever may create a Pod may run it as any ServiceAccount of its namespace; Kubernetes' built-in
    ``edit`` and ``admin`` roles say so by granting ``impersonate`` on ``serviceaccounts``. The
    operator creates the Jobs with its own privileges, so the author must hold that grant for the
    named ServiceAccount (or for "default").
    """
    return [
        Permission(verb="create", group="batch", resource="jobs", namespace=namespace, name=None),
        Permission(
            verb="impersonate",
            group="",
            resource="serviceaccounts",
            namespace=namespace,
            name=service_account(obj),
        ),
    ]


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


# --------------------------------------------------------------------------------------------------
# Spec: the domain's parse and the Job the template describes


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


def check_parse(obj: Mapping[str, Any]) -> list[str]:
    """Errors of the name and the spec as the domain parses them (field paths, durations, ...)."""
    name = _str((obj.get("metadata") or {}).get("name"))
    errors = [f"metadata.name: {problem}" for problem in (api.name_errors(name) if name else ())]
    try:
        api.parse_spec(_spec_of(obj))
    except api.SpecError as exc:
        errors.extend(exc.errors)
    return errors


def check_job_template(
    obj: Mapping[str, Any], *, dry_run_job: DryRunJob, dry_run_namespace: str
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the Job the template describes, as the API server judges it.

    The dry-run runs in ``dry_run_namespace`` (the operator's own), so its answer never depends on
    the CTJ's namespace. A dry-run that fails for a reason other than the template (the API server
    unreachable, throttled) is a warning, not an error: this check is advice.
    """
    body = dry_run_body(obj)
    if body is None:
        return [], []
    try:
        problem = dry_run_job(dry_run_namespace, body)
    except Exception as exc:
        log.warning("could not dry-run the Job template: %s", exc)
        return [], ["spec.jobTemplate: not checked now (the API server did not answer the dry-run)"]
    if problem is None:
        return [], []
    # The API server names the Job it generated a name for ("Job.batch "sync-x7k2p" is invalid: ..."):
    # drop that random name, so the same template always gets the same answer.
    return [f"spec.jobTemplate: {_GENERATED_JOB.sub('the Job it describes is invalid: ', problem)}"], []


# --------------------------------------------------------------------------------------------------
# The review


def needs_review(request: Mapping[str, Any]) -> bool:
    """CREATE always; UPDATE only when the spec changed; DELETE and CONNECT never."""
    operation = request.get("operation")
    if operation == "CREATE":
        return True
    if operation != "UPDATE":
        return False
    return bool(_spec_of(request.get("object")) != _spec_of(request.get("oldObject")))


@dataclasses.dataclass(frozen=True, slots=True)
class Checks:
    """Which checks a path runs."""

    references: bool
    spec: bool


CHECKS = {
    VALIDATE_PATH: Checks(references=True, spec=True),
    REFERENCES_PATH: Checks(references=True, spec=False),
    SPEC_PATH: Checks(references=False, spec=True),
}


def review(
    request: Mapping[str, Any],
    *,
    checks: Checks,
    resolver: Resolver,
    dry_run_job: DryRunJob,
    dry_run_namespace: str,
    access: AccessChecker | None = None,
) -> Response:
    """The AdmissionReview ``response`` for ``request``: allowed, or denied with every problem."""
    uid = str(request.get("uid", ""))
    if not needs_review(request):
        return allow(uid)
    obj = request.get("object") or {}
    spec = _spec_of(obj)
    if not isinstance(spec, Mapping):
        return deny(uid, code=400, message="spec: required")
    errors: list[str] = []
    warnings: list[str] = []
    needed: list[Permission] = []
    if checks.spec:
        errors += check_parse(obj)
    if checks.references:
        reference_errors, needed = check_references(spec, resolver=resolver)
        errors += reference_errors
    if checks.spec:
        template_errors, warnings = check_job_template(
            obj, dry_run_job=dry_run_job, dry_run_namespace=dry_run_namespace
        )
        errors += template_errors
    if errors:
        return deny(uid, code=400, message="; ".join(errors))
    if access is not None and checks.references:
        namespace = _str(request.get("namespace")) or _str((obj.get("metadata") or {}).get("namespace")) or ""
        needed = workload_permissions(obj, namespace=namespace) + needed
        missing = missing_permissions(request.get("userInfo") or {}, needed, access=access)
        if missing:
            return deny(uid, code=403, message="; ".join(missing))
    return allow(uid, warnings=warnings)


class Admission:
    """Routes the webhook paths to ``review`` with the given API-backed helpers.

    ``access`` is given only when the webhook, not a ValidatingAdmissionPolicy, enforces tenancy.
    """

    def __init__(
        self,
        *,
        resolver: Resolver,
        dry_run_job: DryRunJob,
        dry_run_namespace: str,
        access: AccessChecker | None = None,
    ) -> None:
        self._resolver = resolver
        self._dry_run_job = dry_run_job
        self._dry_run_namespace = dry_run_namespace
        self._access = access

    def __call__(self, path: str, request: Mapping[str, Any]) -> Response:
        checks = CHECKS.get(path)
        if checks is None:
            raise LookupError(f"no admission handler for {path}")
        return review(
            request,
            checks=checks,
            resolver=self._resolver,
            dry_run_job=self._dry_run_job,
            dry_run_namespace=self._dry_run_namespace,
            access=self._access,
        )
