"""How API requests are named in ``changejob_api_requests_total`` (the API server's verbs)."""

from __future__ import annotations

import pytest

from changejob.kube.transport import verb_and_resource


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/namespaces/a/configmaps", ("list", "configmaps")),
        ("GET", "/api/v1/namespaces/a/configmaps/x", ("get", "configmaps")),
        ("GET", "/apis/batch/v1/jobs", ("list", "jobs")),
        ("GET", "/apis/triggers.changejob.dev/v1alpha/changetriggeredjobs", ("list", "changetriggeredjobs")),
        (
            "PUT",
            "/apis/triggers.changejob.dev/v1alpha/namespaces/a/changetriggeredjobs/x/status",
            ("update", "changetriggeredjobs/status"),
        ),
        ("POST", "/api/v1/namespaces/a/events", ("create", "events")),
        ("DELETE", "/apis/batch/v1/namespaces/a/jobs/j?propagationPolicy=Background", ("delete", "jobs")),
        ("PATCH", "/api/v1/nodes/n1", ("patch", "nodes")),
        ("GET", "/api/v1/namespaces", ("list", "namespaces")),
        ("GET", "/api/v1/namespaces/foo", ("get", "namespaces")),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/o/leases/kube-changejob-shard-3", ("get", "leases")),
    ],
)
def test_verb_and_resource(method: str, path: str, expected: tuple[str, str]) -> None:
    assert verb_and_resource(method, path) == expected
