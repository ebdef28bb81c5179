"""Start-up checks: the mistakes a newcomer makes, each turned into one line that says what to do.

``cli.main`` runs them once, in this order, before the manager starts: a kubeconfig (or the Pod's
service account) can be loaded; the API server answers and accepts the credentials; the
ChangeTriggeredJob CRD is installed; the operator's namespace exists; the credentials may do what
the operator does (SelfSubjectAccessReviews: no side effects). The first failure raises
:class:`Problem` with the process exit code documented in docs/cli.md. Without these checks the
manager would retry a missing CRD or namespace in the background forever, or stop with a traceback.

Each check costs one request or a few, once per start.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import os
import re
from collections.abc import Sequence
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.config import config_exception

from changejob.domain import api
from changejob.kube import resources, transport, writes

CRD_FILE = "crds/triggers.changejob.dev_changetriggeredjobs.yaml"
CHECK_TIMEOUT = (3.0, 10.0)
SSAR_PATH = resources.SELF_SUBJECT_ACCESS_REVIEW.path()
SELF_REVIEW_PATH = resources.SELF_SUBJECT_REVIEW.path()


class ExitCode(enum.IntEnum):
    """The process exit codes of ``kube-changejob run`` (documented in docs/cli.md)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    KUBECONFIG = 3
    UNREACHABLE = 4
    NAMESPACE = 5
    CRD = 6
    FORBIDDEN = 7


@dataclasses.dataclass(frozen=True)
class Problem(Exception):  # noqa: N818 - a problem to report, not an error of this program
    """A start-up failure: what went wrong and what to do, in one line, and the exit code."""

    code: ExitCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Permission:
    """One thing the operator must be allowed to do; ``namespace`` None means every namespace."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    subresource: str = ""
    name: str = ""

    def describe(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            resource += f"/{self.subresource}"
        if self.name:
            resource += f" {self.name}"
        where = f"in namespace {self.namespace}" if self.namespace else "in all namespaces"
        return f"{self.verb} {resource} {where}"


# --------------------------------------------------------------------------------------------------
# What to check (pure)


def required_permissions(*, namespaces: Sequence[str], operator_namespace: str, leader_elect: bool) -> list[Permission]:
    """What the operator does at start and on every trigger, in each namespace it serves.

    The resources CTJs watch are not here: they are named by users later, and a forbidden one is
    reported on its CTJ (``ResourceForbidden``), not at start.
    """
    wanted: list[Permission] = []
    scopes: list[str | None] = list(namespaces) or [None]
    for ns in scopes:
        wanted += [Permission(verb, api.GROUP, api.PLURAL, ns) for verb in ("list", "watch")]
        wanted.append(Permission("update", api.GROUP, api.PLURAL, ns, subresource="status"))
        wanted += [Permission(verb, "batch", "jobs", ns) for verb in ("list", "watch", "create", "delete")]
        wanted.append(Permission("create", "", "events", ns))
    wanted.append(Permission("get", "", "secrets", operator_namespace, name=writes.HASH_KEY_SECRET))
    if leader_elect:
        wanted += [
            Permission(verb, "coordination.k8s.io", "leases", operator_namespace)
            for verb in ("list", "create", "update")
        ]
    return wanted


def connection_reason(message: str) -> str:
    """A short human reason for a failed connection (urllib3's messages are long and nested)."""
    known = (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted by the kubeconfig's CA"),
        ("Name or service not known", "unknown host name"),
        ("Temporary failure in name resolution", "host name not resolvable"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
    )
    for needle, reason in known:
        if needle in message:
            return reason
    return re.sub(r"\s+", " ", message)[:160]


# --------------------------------------------------------------------------------------------------
# The checks


def load_client(*, kubeconfig: str | None, context: str | None) -> k8s_client.ApiClient:
    """The API client the operator will use, or a Problem saying why there is none."""
    if kubeconfig and not os.path.isfile(kubeconfig):
        raise Problem(ExitCode.KUBECONFIG, f"kubeconfig file {kubeconfig} does not exist: pass an existing file")
    source = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        return transport.load_api_client(kubeconfig=kubeconfig, context=context)
    except config_exception.ConfigException as exc:
        if kubeconfig or os.path.exists(source.split(os.pathsep)[0]):
            raise Problem(
                ExitCode.KUBECONFIG,
                f"cannot use kubeconfig {source}{f' context {context}' if context else ''} ({exc}): "
                "fix the file or choose another with --kubeconfig/--context",
            ) from None
        raise Problem(
            ExitCode.KUBECONFIG,
            "no kubeconfig found (--kubeconfig unset, "
            + (f"KUBECONFIG={os.environ['KUBECONFIG']} missing" if os.environ.get("KUBECONFIG") else "KUBECONFIG unset")
            + ", no ~/.kube/config) and not running in a Pod: "
            "pass --kubeconfig=PATH or set KUBECONFIG to reach a cluster",
        ) from None
    except Exception as exc:  # a file the client cannot parse: any error of its loader means that
        raise Problem(ExitCode.KUBECONFIG, f"cannot read kubeconfig {source} ({exc}): fix the file") from None


def check(
    api_client: k8s_client.ApiClient,
    *,
    namespaces: Sequence[str],
    operator_namespace: str,
    leader_elect: bool,
) -> None:
    """Run every check against the API server; raise the first Problem found."""
    t = transport.Transport(api_client)
    host = t.url("")
    _reachable(t, host)
    _crd_installed(t)
    _namespace_exists(t, operator_namespace)
    wanted = required_permissions(
        namespaces=namespaces, operator_namespace=operator_namespace, leader_elect=leader_elect
    )
    _allowed(t, wanted)


def _request(t: transport.Transport, method: str, path: str, **kwargs: Any) -> Any:
    return t.request(method, path, timeout=CHECK_TIMEOUT, span_resource="preflight", **kwargs)


def _reachable(t: transport.Transport, host: str) -> None:
    try:
        _request(t, "GET", "/version")
    except transport.ApiError as exc:
        if exc.status == 0:
            raise Problem(
                ExitCode.UNREACHABLE,
                f"cannot reach the API server at {host} ({connection_reason(exc.message)}): check that the "
                "cluster is running and that --kubeconfig/--context point at it",
            ) from None
        if exc.status == 401:
            raise Problem(
                ExitCode.UNREACHABLE,
                f"the API server at {host} rejected the credentials (401 Unauthorized): renew them "
                "(the token may have expired) or choose another --context",
            ) from None
        raise Problem(
            ExitCode.UNREACHABLE, f"the API server at {host} answered {exc}: is it a Kubernetes API server?"
        ) from None


def _crd_installed(t: transport.Transport) -> None:
    try:
        answer = _request(t, "GET", resources.group_version_path(api.API_VERSION))
    except transport.ApiError as exc:
        if exc.status != 404:
            raise Problem(ExitCode.UNREACHABLE, f"could not read API discovery ({exc})") from None
        answer = None
    served = {r.get("name") for r in (answer or {}).get("resources") or ()}
    if api.PLURAL not in served:
        raise Problem(
            ExitCode.CRD,
            f"the ChangeTriggeredJob CRD ({api.PLURAL}.{api.GROUP}, version {api.VERSION}) is not "
            f"installed in this cluster: install it with `kubectl apply --server-side -f {CRD_FILE}` "
            "or the Helm chart (crds.install=true)",
        )


def _namespace_exists(t: transport.Transport, namespace: str) -> None:
    """The operator keeps its hash key (and Leases) in its namespace, so it must exist.

    Reading the hash-key Secret answers when it exists; otherwise a dry-run create of it (what the
    operator does next anyway) is refused with NotFound by the API server exactly when the namespace
    is missing. Nothing is written.
    """
    secrets = resources.SECRET.path(namespace)
    fix = (
        f"create it (kubectl create namespace {namespace}) or choose another with "
        "--leader-election-namespace (CHANGEJOB_LEADER_ELECTION_NAMESPACE)"
    )
    try:
        _request(t, "GET", resources.SECRET.path(namespace, writes.HASH_KEY_SECRET))
        return
    except transport.ApiError as exc:
        if exc.status == 403:
            raise _forbidden(t, Permission("get", "", "secrets", namespace, name=writes.HASH_KEY_SECRET)) from None
        if exc.status != 404:
            raise Problem(ExitCode.UNREACHABLE, f"could not read namespace {namespace} ({exc})") from None
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": writes.HASH_KEY_SECRET, "namespace": namespace}}
    try:
        _request(t, "POST", secrets, query={"dryRun": "All"}, body=body)
    except transport.ApiError as exc:
        kind = (exc.body.get("details") or {}).get("kind")
        if exc.status == 404 and kind == "namespaces":
            raise Problem(ExitCode.NAMESPACE, f"the operator's namespace {namespace} does not exist: {fix}") from None
        if exc.status == 403:
            raise _forbidden(t, Permission("create", "", "secrets", namespace)) from None
        if exc.status != 409:
            raise Problem(ExitCode.UNREACHABLE, f"could not check namespace {namespace} ({exc})") from None


def _allowed(t: transport.Transport, wanted: Sequence[Permission]) -> None:
    """Ask the authorizer about every permission (in parallel: one short request each)."""

    def ask(p: Permission) -> bool:
        attributes = {"verb": p.verb, "group": p.group, "resource": p.resource}
        attributes |= {
            k: v for k, v in (("namespace", p.namespace), ("subresource", p.subresource), ("name", p.name)) if v
        }
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        status = (_request(t, "POST", SSAR_PATH, body=body) or {}).get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="preflight") as pool:
        try:
            answers = list(pool.map(ask, wanted))
        except transport.ApiError as exc:
            raise Problem(ExitCode.UNREACHABLE, f"could not ask the API server for permissions ({exc})") from None
    denied = [p for p, ok in zip(wanted, answers, strict=True) if not ok]
    if denied:
        raise _forbidden(t, *denied)


def _forbidden(t: transport.Transport, *denied: Permission) -> Problem:
    more = f" (and {len(denied) - 1} more)" if len(denied) > 1 else ""
    return Problem(
        ExitCode.FORBIDDEN,
        f"{_who(t)} may not {denied[0].describe()}{more}: grant the operator's RBAC (the Helm chart or "
        "config/default create it; see docs/install.md) or run it with other credentials",
    )


def _who(t: transport.Transport) -> str:
    """The user the credentials authenticate as (SelfSubjectReview), for the message."""
    try:
        answer = _request(
            t, "POST", SELF_REVIEW_PATH, body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
    except transport.ApiError:
        return "these credentials"
    name = ((answer or {}).get("status") or {}).get("userInfo", {}).get("username")
    return f"user {name}" if name else "these credentials"
