"""The plugin's connection to the cluster and its few API calls.

Configuration is found as kubectl finds it: ``--kubeconfig``, else ``$KUBECONFIG`` (a list of files,
merged), else ``~/.kube/config``, else the Pod's service account; the namespace is ``-n``, else the
context's, else the Pod's, else ``default``. Requests go through the operator's own transport
(``kube/transport.py``: plain JSON through the official client's credentials and connection pool).
Every failure becomes a :class:`Failure`: one line and the exit code documented in docs/plugin.md.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Final

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from changejob import preflight
from changejob.domain import api, jobs
from changejob.kube import resources, transport
from changejob.plugin import why

SERVICE_ACCOUNT_NAMESPACE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MESSAGE_LIMIT: Final = 400
RESOURCE: Final = f"{api.PLURAL}.{api.GROUP}"
"""How kubectl names the resource in messages: ``changetriggeredjobs.triggers.changejob.dev``."""


class ExitCode(enum.IntEnum):
    """The exit codes of ``kubectl changejob`` (documented in docs/plugin.md)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    FORBIDDEN = 4
    TIMEOUT = 5


@dataclasses.dataclass(frozen=True)
class Failure(Exception):  # noqa: N818 - a result to report, not a bug of this program
    """What went wrong, in one line, and the exit code."""

    code: ExitCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Session:
    """A transport to the chosen cluster and the namespace commands act in."""

    transport: transport.Transport
    namespace: str

    def ctj_path(self, name: str | None = None) -> str:
        return resources.CTJ.path(self.namespace, name)


# --------------------------------------------------------------------------------------------------
# Connecting


def connect(*, kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
    """Load the configuration as kubectl does and choose the namespace."""
    if kubeconfig and not os.path.isfile(kubeconfig):
        raise Failure(ExitCode.ERROR, f"kubeconfig file {kubeconfig} does not exist")
    source = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    files = [p for p in source.split(os.pathsep) if p and os.path.isfile(p)]
    try:
        if files:
            context = context or _first_current_context(files)
            chosen = _context_namespace(source, context)  # also refuses an unknown --context in one line
            namespace = namespace or chosen
            api_client = k8s_config.new_client_from_config(config_file=source, context=context)  # type: ignore[no-untyped-call]
        elif context:
            raise Failure(ExitCode.ERROR, f"context {context} not found: no kubeconfig ({source} does not exist)")
        else:
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api_client = k8s_client.ApiClient(configuration)
            namespace = namespace or _pod_namespace()
    except k8s_config.ConfigException as exc:
        if not files and not context:
            raise Failure(
                ExitCode.ERROR,
                f"no kubeconfig found ({source} does not exist) and not running in a Pod: "
                "pass --kubeconfig=PATH or set KUBECONFIG",
            ) from None
        raise Failure(ExitCode.ERROR, f"cannot use kubeconfig {source}: {_one_line(str(exc))}") from None
    except Failure:
        raise
    except Exception as exc:  # a file the client's loader cannot parse: any error of it means that
        raise Failure(ExitCode.ERROR, f"cannot read kubeconfig {source}: {_one_line(str(exc))}") from None
    return Session(transport=transport.Transport(api_client), namespace=namespace or "default")


def _first_current_context(files: list[str]) -> str | None:
    """The current context of a kubeconfig list as kubectl reads it: from the first file that sets one
    (the official Python client's merge takes the last)."""
    for path in files:
        with open(path, encoding="utf-8") as file:
            loaded = yaml.safe_load(file)
        if isinstance(loaded, dict) and loaded.get("current-context"):
            return str(loaded["current-context"])
    return None


def _context_namespace(source: str, context: str | None) -> str | None:
    contexts, current = k8s_config.list_kube_config_contexts(config_file=source)  # type: ignore[no-untyped-call]
    chosen = next((c for c in contexts or () if c.get("name") == context), None) if context else current
    if context and chosen is None:
        raise Failure(ExitCode.ERROR, f'context "{context}" does not exist in kubeconfig {source}')
    return ((chosen or {}).get("context") or {}).get("namespace") or None


def _pod_namespace() -> str | None:
    """client-go's in-cluster namespace: $POD_NAMESPACE, else the service account's namespace file."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shortened(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Some API errors quote the whole object; keep the start and the end, where the reason is."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


# --------------------------------------------------------------------------------------------------
# Calls


def failure(exc: transport.ApiError, session: Session, *, name: str | None = None) -> Failure:
    """The one line (and exit code) for an API error met while acting on CTJ ``name``."""
    host = session.transport.url("")
    if exc.status == 0:
        return Failure(
            ExitCode.ERROR,
            f"cannot reach the API server at {host} ({preflight.connection_reason(exc.message)}): check that the "
            "cluster is running and that --kubeconfig/--context point at it",
        )
    if exc.status == 401:
        return Failure(ExitCode.ERROR, f"the API server at {host} rejected the credentials (401 Unauthorized)")
    message = _one_line(exc.message) or exc.reason
    if exc.status == 403:
        return Failure(ExitCode.FORBIDDEN, message)
    details = exc.body.get("details") or {}
    if exc.status == 404 and name is not None:
        if details.get("name") == name:
            return Failure(ExitCode.NOT_FOUND, f'{RESOURCE} "{name}" not found in namespace "{session.namespace}"')
        return Failure(
            ExitCode.ERROR,
            f"this cluster does not serve {RESOURCE} (version {api.VERSION}): is the kube-changejob CRD installed?",
        )
    return Failure(ExitCode.ERROR, f"{exc.status} {exc.reason}: {_shortened(message)}")


def _call(session: Session, method: str, path: str, *, name: str | None = None, **kwargs: Any) -> Any:
    try:
        return session.transport.request(method, path, namespace=session.namespace, name=name, **kwargs)
    except transport.ApiError as exc:
        raise failure(exc, session, name=name) from None


def get(session: Session, name: str) -> dict[str, Any]:
    """The CTJ ``name``."""
    found: dict[str, Any] = _call(session, "GET", session.ctj_path(name), name=name)
    return found


def patch(session: Session, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of CTJ ``name``; unknown fields are refused (``fieldValidation=Strict``)
    instead of being dropped silently by an older CRD."""
    patched: dict[str, Any] = _call(
        session,
        "PATCH",
        session.ctj_path(name),
        name=name,
        body=body,
        content_type=transport.MERGE_PATCH,
        query={"fieldValidation": "Strict"},
    )
    return patched


def owned_jobs(session: Session, name: str) -> list[dict[str, Any]]:
    """The Jobs labelled ``changejob.dev/owner=NAME`` in the namespace."""
    try:
        answer = session.transport.request(
            "GET",
            resources.JOB.path(session.namespace),
            query={"labelSelector": f"{jobs.OWNER_LABEL}={name}"},
            namespace=session.namespace,
        )
    except transport.ApiError as exc:
        raise failure(exc, session) from None
    return list((answer or {}).get("items") or ())


def wait_for_request(
    session: Session, ctj: Mapping[str, Any], value: str, *, timeout: float, clock: Any = time.monotonic
) -> dict[str, Any]:
    """Watch CTJ ``ctj`` until ``status.lastTriggerRequest`` is ``value``; return it then.

    Raises a TIMEOUT Failure after ``timeout`` seconds, NOT_FOUND if the CTJ is deleted meanwhile.
    """
    name = str(ctj["metadata"]["name"])
    deadline = clock() + timeout
    current: Mapping[str, Any] = ctj
    while True:
        if (current.get("status") or {}).get("lastTriggerRequest") == value:
            return dict(current)
        remaining = deadline - clock()
        if remaining <= 0:
            raise _timed_out(current, value, timeout)
        query = {
            "watch": True,
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": (current.get("metadata") or {}).get("resourceVersion"),
            "allowWatchBookmarks": True,
            "timeoutSeconds": max(1, math.ceil(remaining)),
        }
        try:
            for event in session.transport.stream(session.ctj_path(), query=query, read_timeout=remaining + 5):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "DELETED":
                    raise Failure(ExitCode.NOT_FOUND, f'{RESOURCE} "{name}" was deleted while waiting')
                if kind == "ERROR":
                    current = get(session, name)  # e.g. 410 Gone: start again from the current object
                    break
                if kind in ("ADDED", "MODIFIED"):
                    current = obj
                    if (obj.get("status") or {}).get("lastTriggerRequest") == value:
                        return dict(obj)
                elif kind == "BOOKMARK":
                    current = {**current, "metadata": {**(current.get("metadata") or {}), **obj.get("metadata", {})}}
        except transport.ApiError as exc:
            if exc.status != 0:
                raise failure(exc, session, name=name) from None
            current = get(session, name)  # a silent or dropped stream: start again from the current object


def _timed_out(ctj: Mapping[str, Any], value: str, timeout: float) -> Failure:
    status = ctj.get("status") or {}
    name = (ctj.get("metadata") or {}).get("name", "?")
    why = (
        "it is suspended: the request is handled on resume"
        if (ctj.get("spec") or {}).get("suspend") is True
        else "is the operator running, and does it handle changejob.dev/trigger-request?"
    )
    return Failure(
        ExitCode.TIMEOUT,
        f"timed out after {timeout:g}s waiting for {name} to handle trigger request {value} "
        f"(status.lastTriggerRequest: {status.get('lastTriggerRequest') or 'unset'}): {why}",
    )


def job_of_request(session: Session, ctj: Mapping[str, Any], value: str) -> str | None:
    """The Job made for trigger request ``value`` (its annotation), else the CTJ's last Job."""
    name = str(ctj["metadata"]["name"])
    for job in owned_jobs(session, name):
        metadata = job.get("metadata") or {}
        if (metadata.get("annotations") or {}).get(why.TRIGGER_REQUEST_ANNOTATION) == value:
            return str(metadata.get("name"))
    last = (ctj.get("status") or {}).get("lastJobName")
    return str(last) if last else None
