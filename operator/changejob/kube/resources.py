"""The resource catalogue: every API type the operator calls, and the one place request paths are built.

A :class:`ResourceType` is what an (apiVersion, kind) maps to on the server; the types the operator
itself reads and writes are listed here, the types CTJs watch come from discovery
(``kube/discovery.py``) as the same class. Every path is built by :meth:`ResourceType.path` (or
:func:`group_version_path` for discovery), and every name and namespace placed in a path is
percent-escaped (``urllib.parse.quote(..., safe="")``): a name such as ``x?watch=1&labelSelector=y``
names one object and is sent as one path segment, never as a query string or another path.
"""

from __future__ import annotations

import dataclasses
from typing import Final
from urllib.parse import quote

from changejob.domain import api


def segment(text: str) -> str:
    """``text`` escaped as one URL path segment (``/``, ``?``, ``#``, ``%``, ``&`` included)."""
    return quote(text, safe="")


def group_version_path(api_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/<group>/<version>`` for the others."""
    group, _, version = api_version.rpartition("/")
    return f"/apis/{segment(group)}/{segment(version)}" if group else f"/api/{segment(version)}"


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource: what an (apiVersion, kind) maps to."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, *, subresource: str | None = None) -> str:
        """The collection (no ``name``) or object path; namespaced when the type is and ``namespace``
        is given, across all namespaces (or cluster-scoped) otherwise."""
        path = group_version_path(self.api_version)
        if self.namespaced and namespace:
            path += f"/namespaces/{segment(namespace)}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{segment(name)}"
        if subresource:
            path += f"/{subresource}"
        return path


CTJ: Final = ResourceType(group=api.GROUP, version=api.VERSION, kind=api.KIND, plural=api.PLURAL, namespaced=True)
JOB: Final = ResourceType(group="batch", version="v1", kind="Job", plural="jobs", namespaced=True)
LEASE: Final = ResourceType(group="coordination.k8s.io", version="v1", kind="Lease", plural="leases", namespaced=True)
SECRET: Final = ResourceType(group="", version="v1", kind="Secret", plural="secrets", namespaced=True)
EVENT: Final = ResourceType(group="", version="v1", kind="Event", plural="events", namespaced=True)
SUBJECT_ACCESS_REVIEW: Final = ResourceType(
    group="authorization.k8s.io",
    version="v1",
    kind="SubjectAccessReview",
    plural="subjectaccessreviews",
    namespaced=False,
)
SELF_SUBJECT_ACCESS_REVIEW: Final = ResourceType(
    group="authorization.k8s.io",
    version="v1",
    kind="SelfSubjectAccessReview",
    plural="selfsubjectaccessreviews",
    namespaced=False,
)
SELF_SUBJECT_REVIEW: Final = ResourceType(
    group="authentication.k8s.io", version="v1", kind="SelfSubjectReview", plural="selfsubjectreviews", namespaced=False
)
VALIDATING_WEBHOOKS: Final = ResourceType(
    group="admissionregistration.k8s.io",
    version="v1",
    kind="ValidatingWebhookConfiguration",
    plural="validatingwebhookconfigurations",
    namespaced=False,
)
MUTATING_WEBHOOKS: Final = ResourceType(
    group="admissionregistration.k8s.io",
    version="v1",
    kind="MutatingWebhookConfiguration",
    plural="mutatingwebhookconfigurations",
    namespaced=False,
)
