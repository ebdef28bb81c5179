"""What anyone who reaches the webhook port learns from a forged AdmissionReview: nothing.

The real operator serves its webhook on 127.0.0.1. A plain client, not the API server, posts
AdmissionReviews it made up: for a user who may read everything and for one who may read nothing, for
a namespace that exists and for one that does not. With the admission policy enabled (the chart's
default, ``--webhook-tenancy=policy``) the answers are the same byte for byte, and the operator
asks the API server no access question. Before, the webhook answered ``user "x" may not get ...`` for
whatever user the review named (a permission oracle), and dry-ran the Job template in the review's
namespace (``namespaces "x" not found``: a namespace oracle). The same reviews against an operator
in ``--webhook-tenancy=webhook`` mode still show the first: the test can tell the difference.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from ctj_helpers import Kube, ctj_body
from operator_proc import OperatorProcess, free_port

pytestmark = pytest.mark.integration

Start = Callable[..., OperatorProcess]


def webhook_args(port: int, tmp: Any, *extra: str) -> tuple[str, ...]:
    return (
        f"--webhook-port={port}",
        "--webhook-host=127.0.0.1",
        "--webhook-extra-sans=127.0.0.1",
        "--webhook-config=none",
        f"--webhook-cert-dir={tmp}",
        *extra,
    )


def forge(port: int, *, user: str, namespace: str, obj: dict[str, Any], path: str = "/validate-ctj") -> Any:
    """POST a made-up AdmissionReview as a plain client (no client certificate, no verification)."""
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "operation": "CREATE",
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": {**obj, "metadata": {**obj["metadata"], "namespace": namespace}},
        },
    }
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        conn.request("POST", path, body=json.dumps(review), headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200
        response = json.loads(answer.read())["response"]
    finally:
        conn.close()
    response.pop("uid")
    return response


def access_reviews(proc: OperatorProcess) -> float:
    """SubjectAccessReviews the operator sent, by its own request counter."""
    lines = [
        line
        for line in proc.metrics().splitlines()
        if 'resource="subjectaccessreviews"' in line and line.startswith("changejob_api_requests_total{")
    ]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.fixture
def secret_and_reader(kube: Kube) -> dict[str, Any]:
    """A Secret, and a CTJ that watches it (with a Job template the API server refuses)."""
    kube.run("create", "secret", "generic", "db", "-n", kube.ns, "--from-literal=password=x")
    ref = {"apiVersion": "v1", "kind": "Secret", "name": "db", "namespace": kube.ns}
    obj = ctj_body("reader", [ref])
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    return obj


def test_forged_reviews_learn_nothing(
    kube: Kube, operator_factory: Start, secret_and_reader: dict[str, Any], tmp_path: Any
) -> None:
    port = free_port()
    proc = operator_factory(extra=webhook_args(port, tmp_path / "certs"))
    obj, ns = secret_and_reader, kube.ns
    missing = f"{ns}-missing"

    as_admin = forge(port, user="system:admin", namespace=ns, obj=obj)
    as_nobody = forge(port, user="system:anonymous", namespace=ns, obj=obj)
    assert as_admin == as_nobody  # whose permissions: not told
    elsewhere = forge(port, user="system:anonymous", namespace=missing, obj=obj)
    assert elsewhere == as_nobody  # whether a namespace exists: not told
    # what it does say is about the submitted spec only
    assert as_nobody["allowed"] is False
    assert "spec.jobTemplate" in as_nobody["status"]["message"] and "image" in as_nobody["status"]["message"]
    assert "may not" not in as_nobody["status"]["message"]

    fixed = json.loads(json.dumps(obj))
    fixed["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox"
    answers = [
        forge(port, user=user, namespace=where, obj=fixed, path=path)
        for user in ("system:admin", "system:anonymous")
        for where in (ns, missing)
        for path in ("/validate-ctj", "/validate-ctj/references", "/validate-ctj/spec")
    ]
    assert all(a == {"allowed": True} for a in answers), answers
    assert access_reviews(proc) == 0


def test_in_webhook_tenancy_mode_a_forged_review_still_learns_permissions(
    kube: Kube, operator_factory: Start, secret_and_reader: dict[str, Any], tmp_path: Any
) -> None:
    """The control: where the webhook itself checks tenancy (clusters without the policy API), its
    answers depend on the named user, which is why docs/security.md asks for a client CA there."""
    port = free_port()
    proc = operator_factory(extra=webhook_args(port, tmp_path / "certs", "--webhook-tenancy=webhook"))
    fixed = json.loads(json.dumps(secret_and_reader))
    fixed["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox"
    as_nobody = forge(port, user="system:anonymous", namespace=kube.ns, obj=fixed)
    assert as_nobody["allowed"] is False
    assert (
        f'user "system:anonymous" may not get secrets "db" in namespace "{kube.ns}"' in as_nobody["status"]["message"]
    )
    assert access_reviews(proc) > 0
