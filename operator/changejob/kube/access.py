"""API calls the admission webhook makes on behalf of a request.

``SubjectAccessChecker`` asks the API server's authorizer (``authorization.k8s.io/v1``
SubjectAccessReview) whether the requesting user may do something: whatever authorizers the cluster
runs (RBAC, webhooks, node), the answer is the one the user would get. ``dry_run_job`` offers a Job
body to the API server with ``dryRun=All``: defaulting, validation and admission run, nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s_client

from changejob.kube import resources, transport

TRANSIENT = frozenset({401, 408, 429})


def review_body(
    *, user: Mapping[str, Any], verb: str, group: str, resource: str, namespace: str | None, name: str | None
) -> dict[str, Any]:
    """The SubjectAccessReview for ``user`` (an AdmissionReview ``userInfo``) doing ``verb``."""
    attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": resource}
    if namespace:
        attributes["namespace"] = namespace
    if name:
        attributes["name"] = name
    spec: dict[str, Any] = {"user": str(user.get("username", "")), "resourceAttributes": attributes}
    if user.get("uid"):
        spec["uid"] = str(user["uid"])
    if user.get("groups"):
        spec["groups"] = [str(g) for g in user["groups"]]
    if user.get("extra"):
        spec["extra"] = {str(k): [str(v) for v in vs] for k, vs in user["extra"].items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class SubjectAccessChecker:
    """Answers "may this user do that?" with a SubjectAccessReview per question."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._t = transport.Transport(api_client)

    def allowed(
        self,
        *,
        user: Mapping[str, Any],
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None,
    ) -> bool:
        body = review_body(user=user, verb=verb, group=group, resource=resource, namespace=namespace, name=name)
        answer = self._t.request(
            "POST", resources.SUBJECT_ACCESS_REVIEW.path(), body=body, span_resource="subjectaccessreviews"
        )
        status = (answer or {}).get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied")


def dry_run_job(api_client: k8s_client.ApiClient) -> Callable[[str, Mapping[str, Any]], str | None]:
    """A function that dry-run creates a Job and returns the API server's complaint, or None.

    The body is sent as written (no client-side model), so the server judges exactly what the
    operator would later create. A 4xx answer (invalid, forbidden by an admission policy, ...) is the
    template's fault and is returned as a message; 401, 408 and 429 and anything else (5xx, no
    answer) are raised: they say nothing about the template.
    """
    t = transport.Transport(api_client)

    def dry_run(namespace: str, job: Mapping[str, Any]) -> str | None:
        try:
            t.request(
                "POST",
                resources.JOB.path(namespace),
                query={"dryRun": "All"},
                body=job,
                span_resource="jobs",
                namespace=namespace,
            )
        except transport.ApiError as exc:
            if 400 <= exc.status < 500 and exc.status not in TRANSIENT:
                return exc.message or str(exc)
            raise
        return None

    return dry_run
