"""The admission webhook without a cluster: review logic, certificates, and the HTTPS server.

The API-backed collaborators are small in-memory implementations of the same protocols the operator
uses with the API server: a dict of kinds (discovery), a table of grants (SubjectAccessReview), and
a few of the API server's Job validation rules (the dry-run create).
"""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from changejob.kube import access as kube_access
from changejob.kube import resources
from changejob.webhook import admission, certs, server

pytestmark = pytest.mark.unit

NOW = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.UTC)

KINDS = {
    ("v1", "ConfigMap"): resources.ResourceType("", "v1", "ConfigMap", "configmaps", True),
    ("v1", "Secret"): resources.ResourceType("", "v1", "Secret", "secrets", True),
    ("v1", "Node"): resources.ResourceType("", "v1", "Node", "nodes", False),
    ("apps/v1", "Deployment"): resources.ResourceType("apps", "v1", "Deployment", "deployments", True),
}


class DictResolver:
    """Discovery from a fixed table."""

    def __init__(self, kinds: Mapping[tuple[str, str], resources.ResourceType] = KINDS) -> None:
        self.kinds = dict(kinds)

    def resolve(self, *, api_version: str, kind: str) -> resources.ResourceType | None:
        return self.kinds.get((api_version, kind))


class Grants:
    """An authorizer from a set of (user, verb, group, resource, namespace, name); name None = any."""

    def __init__(self, *grants: tuple[str, str, str, str, str | None, str | None]) -> None:
        self.grants = set(grants)
        self.asked: list[tuple[Mapping[str, Any], str, str, str, str | None, str | None]] = []

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
        self.asked.append((user, verb, group, resource, namespace, name))
        username = user["username"]
        return (username, verb, group, resource, namespace, name) in self.grants or (
            username,
            verb,
            group,
            resource,
            namespace,
            None,
        ) in self.grants


class JobValidator:
    """A few of the API server's Job rules, with its message format; remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Mapping[str, Any]]] = []

    def __call__(self, namespace: str, job: Mapping[str, Any]) -> str | None:
        self.seen.append((namespace, copy.deepcopy(dict(job))))
        pod = job["spec"]["template"]["spec"]
        problems = [
            f"spec.template.spec.containers[{i}].image: Required value"
            for i, c in enumerate(pod.get("containers", []))
            if not c.get("image")
        ]
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append('spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"')
        if not problems:
            return None
        return f'Job.batch "{job["metadata"]["generateName"]}x" is invalid: ' + ", ".join(problems)


ALICE = {
    "username": "alice",
    "uid": "u-alice",
    "groups": ["team-a", "system:authenticated"],
    "extra": {"scopes": ["s1"]},
}
ALICE_MAY_CREATE_JOBS = ("alice", "create", "batch", "jobs", "team-a", None)


def ctj(*resources: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobTemplate": {
            "metadata": {"labels": {"app": "sync"}},
            "spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}
            },
        },
        "resources": list(resources),
    }
    body.update(spec)
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": "config-sync", "namespace": "team-a"},
        "spec": body,
    }


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "name": "app-config", "namespace": "team-a"}
SECRET = {"apiVersion": "v1", "kind": "Secret", "name": "db-creds", "namespace": "team-a"}
NODE = {"apiVersion": "v1", "kind": "Node", "name": "worker-1"}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "team-b"}


def request(
    obj: Mapping[str, Any],
    *,
    operation: str = "CREATE",
    old: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] = ALICE,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uid": "req-1",
        "operation": operation,
        "namespace": "team-a",
        "name": "config-sync",
        "userInfo": dict(user),
        "object": obj,
    }
    if old is not None:
        out["oldObject"] = old
    return out


OPERATOR_NAMESPACE = "kube-changejob-system"


class Reviewer:
    """``admission.review`` of every check with fresh collaborators, kept for inspection.

    ``tenancy`` says whether the webhook checks tenancy itself (``--webhook-tenancy=webhook``).
    """

    def __init__(
        self,
        *grants: tuple[str, str, str, str, str | None, str | None],
        tenancy: bool = True,
        path: str = admission.VALIDATE_PATH,
    ) -> None:
        self.access = Grants(*grants)
        self.jobs = JobValidator()
        self.tenancy = tenancy
        self.path = path

    def __call__(self, req: Mapping[str, Any]) -> dict[str, Any]:
        return admission.review(
            req,
            checks=admission.CHECKS[self.path],
            resolver=DictResolver(),
            access=self.access if self.tenancy else None,
            dry_run_job=self.jobs,
            dry_run_namespace=OPERATOR_NAMESPACE,
        )


EVERYTHING_FOR_ALICE = (
    ALICE_MAY_CREATE_JOBS,
    ("alice", "impersonate", "", "serviceaccounts", "team-a", "default"),
    ("alice", "get", "", "configmaps", "team-a", None),
    ("alice", "get", "", "secrets", "team-a", "db-creds"),
    ("alice", "get", "", "nodes", None, "worker-1"),
    ("alice", "get", "apps", "deployments", "team-b", "web"),
)


def message(response: Mapping[str, Any]) -> str:
    return str(response["status"]["message"])


# --- review: validation -------------------------------------------------------------------------


def test_valid_ctj_is_allowed_and_uid_echoed() -> None:
    review = Reviewer(*EVERYTHING_FOR_ALICE)
    response = review(request(ctj(CONFIGMAP, SECRET, NODE, DEPLOYMENT)))
    assert response == {"uid": "req-1", "allowed": True}


def test_unknown_kind_names_kind_and_version() -> None:
    bad = dict(CONFIGMAP, kind="configmap")
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(ctj(bad)))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert message(response) == "spec.resources[0]: resource kind does not exist: configmap (v1)"


def test_unknown_api_version_is_an_unknown_kind() -> None:
    bad = dict(DEPLOYMENT, apiVersion="apps/v2")
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(ctj(CONFIGMAP, bad)))
    assert message(response) == "spec.resources[1]: resource kind does not exist: Deployment (apps/v2)"


def test_namespaced_kind_without_namespace() -> None:
    bad = {k: v for k, v in CONFIGMAP.items() if k != "namespace"}
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(ctj(bad)))
    assert response["status"]["code"] == 400
    assert message(response) == (
        'spec.resources[0]: namespace is required for namespaced resources: ConfigMap (v1) "app-config"'
    )


def test_cluster_scoped_kind_with_namespace() -> None:
    bad = dict(NODE, namespace="default")
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(ctj(CONFIGMAP, bad)))
    assert response["status"]["code"] == 400
    assert message(response) == (
        'spec.resources[1]: namespace must not be set for cluster-scoped resources: Node (v1) "worker-1"'
    )


def test_job_template_rejected_by_dry_run() -> None:
    obj = ctj(CONFIGMAP)
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("image")
    review = Reviewer(*EVERYTHING_FOR_ALICE)
    response = review(request(obj))
    assert response["status"]["code"] == 400
    assert message(response) == (
        "spec.jobTemplate: the Job it describes is invalid: spec.template.spec.containers[0].image: Required value"
    )


def test_dry_run_receives_the_job_the_template_describes() -> None:
    obj = ctj(CONFIGMAP)
    obj["metadata"]["name"] = "n" * 63
    obj["spec"]["jobTemplate"]["metadata"]["annotations"] = {"note": "x"}
    review = Reviewer(*EVERYTHING_FOR_ALICE)
    assert review(request(obj))["allowed"] is True
    [(namespace, job)] = review.jobs.seen
    assert namespace == OPERATOR_NAMESPACE  # never the CTJ's: the answer must not depend on it
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "n" * 52 + "-", "labels": {"app": "sync"}, "annotations": {"note": "x"}},
        "spec": obj["spec"]["jobTemplate"]["spec"],
    }


def test_name_too_long_for_the_owner_label() -> None:
    obj = ctj(CONFIGMAP)
    obj["metadata"]["name"] = "n" * 64
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(obj))
    assert response["status"]["code"] == 400
    [text] = message(response).split("; ")
    assert text.startswith("metadata.name: must be at most 63 characters")


def test_all_errors_are_reported_together() -> None:
    obj = ctj(
        dict(CONFIGMAP, kind="configmap"),
        {k: v for k, v in SECRET.items() if k != "namespace"},
        dict(NODE, namespace="x"),
    )
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(obj))
    parts = message(response).split("; ")
    assert parts == [
        "spec.resources[0]: resource kind does not exist: configmap (v1)",
        'spec.resources[1]: namespace is required for namespaced resources: Secret (v1) "db-creds"',
        'spec.resources[2]: namespace must not be set for cluster-scoped resources: Node (v1) "worker-1"',
        "spec.jobTemplate: the Job it describes is invalid: "
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"',
    ]


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"resources": []}, "spec.resources", "at least one"),
        ({"cooldown": "-5s"}, "spec.cooldown", ""),
        ({"cooldown": "soon"}, "spec.cooldown", ""),
        ({"history": 0}, "spec.history", ""),
        ({"condition": "Some"}, "spec.condition", ""),
    ],
)
def test_spec_errors_are_reported(change: dict[str, Any], path: str, words: str) -> None:
    obj = ctj(CONFIGMAP)
    obj["spec"].update(change)
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(obj))
    assert response["status"]["code"] == 400
    [text] = message(response).split("; ")
    assert text.startswith(path)
    assert words in text


def test_invalid_field_path_is_reported_with_its_index() -> None:
    obj = ctj(dict(CONFIGMAP, fields=["data", "spec.containers[*.image"]))
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(obj))
    assert response["status"]["code"] == 400
    [text] = message(response).split("; ")
    assert text.startswith("spec.resources[0].fields[1]")
    assert "spec.containers[*.image" in text


def test_spec_and_kind_errors_are_reported_together() -> None:
    obj = ctj(dict(CONFIGMAP, kind="configmap"), history=0)
    parts = message(Reviewer(*EVERYTHING_FOR_ALICE)(request(obj))).split("; ")
    assert len(parts) == 2
    assert any(p.startswith("spec.history") for p in parts)
    assert "spec.resources[0]: resource kind does not exist: configmap (v1)" in parts


class RecordingResolver(DictResolver):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def resolve(self, *, api_version: str, kind: str) -> resources.ResourceType | None:
        self.asked.append((api_version, kind))
        return super().resolve(api_version=api_version, kind=kind)


def test_malformed_api_version_is_not_looked_up() -> None:
    resolver = RecordingResolver()
    obj = ctj(dict(CONFIGMAP, apiVersion="../../v1"), dict(SECRET, kind="Bad Kind"), CONFIGMAP)
    response = admission.review(
        request(obj),
        checks=admission.CHECKS[admission.VALIDATE_PATH],
        resolver=resolver,
        access=Grants(*EVERYTHING_FOR_ALICE),
        dry_run_job=JobValidator(),
        dry_run_namespace=OPERATOR_NAMESPACE,
    )
    parts = message(response).split("; ")
    assert [p.split(":", 1)[0] for p in parts] == ["spec.resources[0].apiVersion", "spec.resources[1].kind"]
    assert resolver.asked == [("v1", "ConfigMap")]


def test_invalid_spec_asks_no_access_questions() -> None:
    review = Reviewer(*EVERYTHING_FOR_ALICE)
    review(request(ctj(dict(CONFIGMAP, kind="configmap"))))
    assert review.access.asked == []


# --- review: tenancy ----------------------------------------------------------------------------


def test_user_who_cannot_read_a_secret_is_denied_naming_it() -> None:
    grants = [g for g in EVERYTHING_FOR_ALICE if g[3] != "secrets"]
    response = Reviewer(*grants)(request(ctj(CONFIGMAP, SECRET)))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    assert message(response) == 'user "alice" may not get secrets "db-creds" in namespace "team-a"'


def test_every_missing_permission_is_named() -> None:
    response = Reviewer()(request(ctj(NODE, DEPLOYMENT)))
    assert message(response).split("; ") == [
        'user "alice" may not create jobs.batch in namespace "team-a"',
        'user "alice" may not impersonate serviceaccounts "default" in namespace "team-a"',
        'user "alice" may not get nodes "worker-1"',
        'user "alice" may not get deployments.apps "web" in namespace "team-b"',
    ]


def test_user_who_cannot_create_jobs_is_denied() -> None:
    grants = [g for g in EVERYTHING_FOR_ALICE if g != ALICE_MAY_CREATE_JOBS]
    response = Reviewer(*grants)(request(ctj(CONFIGMAP)))
    assert response["status"]["code"] == 403
    assert message(response) == 'user "alice" may not create jobs.batch in namespace "team-a"'


@pytest.mark.parametrize(
    ("pod", "account"),
    [
        ({}, "default"),
        ({"serviceAccountName": "deployer"}, "deployer"),
        ({"serviceAccount": "legacy"}, "legacy"),
        ({"serviceAccountName": "", "serviceAccount": "legacy"}, "legacy"),
    ],
)
def test_the_jobs_service_account_must_be_one_the_author_may_impersonate(pod: dict[str, str], account: str) -> None:
    obj = ctj(CONFIGMAP)
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(pod)
    assert admission.service_account(obj) == account
    grants = [g for g in EVERYTHING_FOR_ALICE if g[1] != "impersonate"]
    response = Reviewer(*grants)(request(obj))
    assert response["status"]["code"] == 403
    assert message(response) == f'user "alice" may not impersonate serviceaccounts "{account}" in namespace "team-a"'
    may_use = ("alice", "impersonate", "", "serviceaccounts", "team-a", account)
    assert Reviewer(*grants, may_use)(request(obj))["allowed"] is True


def test_access_is_asked_for_the_requesting_user_with_all_attributes() -> None:
    review = Reviewer(*EVERYTHING_FOR_ALICE)
    review(request(ctj(SECRET, NODE)))
    assert [a[1:] for a in review.access.asked] == [
        ("create", "batch", "jobs", "team-a", None),
        ("impersonate", "", "serviceaccounts", "team-a", "default"),
        ("get", "", "secrets", "team-a", "db-creds"),
        ("get", "", "nodes", None, "worker-1"),
    ]
    assert all(a[0] == ALICE for a in review.access.asked)


def test_another_user_is_judged_by_their_own_grants() -> None:
    bob = {"username": "bob", "groups": ["system:authenticated"]}
    response = Reviewer(*EVERYTHING_FOR_ALICE)(request(ctj(CONFIGMAP), user=bob))
    assert response["status"]["code"] == 403
    assert 'user "bob" may not get configmaps "app-config" in namespace "team-a"' in message(response)


# --- review: operations -------------------------------------------------------------------------


def test_update_without_spec_change_is_not_reviewed() -> None:
    old = ctj(dict(CONFIGMAP, kind="configmap"))  # even an (old, grandfathered) invalid spec
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "a"}
    review = Reviewer()
    assert review(request(new, operation="UPDATE", old=old)) == {"uid": "req-1", "allowed": True}
    assert review.access.asked == []
    assert review.jobs.seen == []


def test_update_with_spec_change_is_reviewed() -> None:
    old = ctj(CONFIGMAP)
    new = ctj(CONFIGMAP, SECRET)
    grants = [g for g in EVERYTHING_FOR_ALICE if g[3] != "secrets"]
    response = Reviewer(*grants)(request(new, operation="UPDATE", old=old))
    assert message(response) == 'user "alice" may not get secrets "db-creds" in namespace "team-a"'


def test_delete_is_not_reviewed() -> None:
    review = Reviewer()
    req = request({}, operation="DELETE", old=ctj(dict(CONFIGMAP, kind="configmap")))
    assert review(req) == {"uid": "req-1", "allowed": True}
    assert review.access.asked == []


# --- policy mode and paths ----------------------------------------------------------------------


def test_in_policy_mode_no_access_question_is_asked() -> None:
    review = Reviewer(tenancy=False)  # alice may do nothing at all
    assert review(request(ctj(CONFIGMAP, SECRET, NODE))) == {"uid": "req-1", "allowed": True}
    assert review.access.asked == []


def test_references_path_checks_kinds_only() -> None:
    obj = ctj(dict(CONFIGMAP, kind="Configmap"), dict(CONFIGMAP, fields=["data["]))
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    review = Reviewer(tenancy=False, path=admission.REFERENCES_PATH)
    response = review(request(obj))
    assert message(response) == "spec.resources[0]: resource kind does not exist: Configmap (v1)"
    assert review.jobs.seen == []


def test_spec_path_checks_the_spec_only() -> None:
    obj = ctj(dict(CONFIGMAP, kind="Configmap"), dict(CONFIGMAP, fields=["data["]))
    review = Reviewer(tenancy=True, path=admission.SPEC_PATH)
    response = review(request(obj))
    [text] = message(response).split("; ")
    assert text.startswith("spec.resources[1].fields[0]")
    assert review.access.asked == []


def test_spec_path_admits_with_a_warning_when_the_dry_run_cannot_answer() -> None:
    def unreachable(namespace: str, job: Mapping[str, Any]) -> str | None:
        raise ConnectionError("API server unreachable")

    response = admission.review(
        request(ctj(CONFIGMAP)),
        checks=admission.CHECKS[admission.SPEC_PATH],
        resolver=DictResolver(),
        dry_run_job=unreachable,
        dry_run_namespace=OPERATOR_NAMESPACE,
    )
    assert response["allowed"] is True
    assert response["warnings"] == ["spec.jobTemplate: not checked now (the API server did not answer the dry-run)"]


def test_admission_routes_paths() -> None:
    handler = admission.Admission(
        resolver=DictResolver(), dry_run_job=JobValidator(), dry_run_namespace=OPERATOR_NAMESPACE
    )
    for path in admission.PATHS:
        assert handler(path, request(ctj(CONFIGMAP)))["allowed"] is True
    assert handler(admission.SPEC_PATH, request(ctj(dict(CONFIGMAP, kind="Nope"))))["allowed"] is True
    assert handler(admission.REFERENCES_PATH, request(ctj(dict(CONFIGMAP, kind="Nope"))))["allowed"] is False
    with pytest.raises(LookupError):
        handler("/mutate-ctj", request(ctj(CONFIGMAP)))


def test_subject_access_review_body_carries_the_whole_user() -> None:
    body = kube_access.review_body(
        user=ALICE, verb="get", group="apps", resource="deployments", namespace="team-b", name="web"
    )
    assert body["spec"] == {
        "user": "alice",
        "uid": "u-alice",
        "groups": ["team-a", "system:authenticated"],
        "extra": {"scopes": ["s1"]},
        "resourceAttributes": {
            "verb": "get",
            "group": "apps",
            "resource": "deployments",
            "namespace": "team-b",
            "name": "web",
        },
    }
    cluster = kube_access.review_body(
        user={"username": "bob"}, verb="get", group="", resource="nodes", namespace=None, name="n1"
    )
    assert cluster["spec"] == {
        "user": "bob",
        "resourceAttributes": {"verb": "get", "group": "", "resource": "nodes", "name": "n1"},
    }


# --- certificates ----------------------------------------------------------------------------------

NAMES = certs.service_names(service="kube-changejob-webhook", namespace="ops", loopback=True)


@pytest.fixture(scope="module")
def bundle() -> certs.Bundle:
    return certs.issue(names=NAMES, now=NOW)


def test_serving_cert_covers_service_names_and_loopback(bundle: certs.Bundle) -> None:
    cert = x509.load_pem_x509_certificate(bundle.tls_crt)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kube-changejob-webhook.ops.svc" in san.get_values_for_type(x509.DNSName)
    assert "kube-changejob-webhook.ops.svc.cluster.local" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certs.covers(bundle.tls_crt, NAMES)
    assert not certs.covers(bundle.tls_crt, certs.service_names(service="other", namespace="ops"))


def test_serving_cert_is_issued_by_the_ca_for_a_year(bundle: certs.Bundle) -> None:
    cert = x509.load_pem_x509_certificate(bundle.tls_crt)
    [ca] = x509.load_pem_x509_certificates(bundle.ca_crt)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert certs.not_after(bundle.tls_crt) == (NOW + dt.timedelta(days=365)).replace(microsecond=0)


def test_rotation_is_due_thirty_days_before_expiry(bundle: certs.Bundle) -> None:
    assert not certs.needs_rotation(bundle, names=NAMES, now=NOW)
    assert not certs.needs_rotation(bundle, names=NAMES, now=NOW + dt.timedelta(days=334))
    assert certs.needs_rotation(bundle, names=NAMES, now=NOW + dt.timedelta(days=335))
    assert certs.needs_rotation(None, names=NAMES, now=NOW)
    other = certs.service_names(service="renamed", namespace="ops")
    assert certs.needs_rotation(bundle, names=other, now=NOW)
    assert certs.needs_rotation(certs.Bundle(ca_crt=b"x", tls_crt=b"garbage", tls_key=b"k"), names=NAMES, now=NOW)


def test_rotation_keeps_the_previous_ca_while_it_is_valid(bundle: certs.Bundle) -> None:
    later = NOW + dt.timedelta(days=340)
    rotated = certs.issue(names=NAMES, now=later, previous_ca=bundle.ca_crt)
    new_ca, old_ca = x509.load_pem_x509_certificates(rotated.ca_crt)
    assert old_ca == x509.load_pem_x509_certificate(bundle.ca_crt)
    assert new_ca.subject != old_ca.subject
    x509.load_pem_x509_certificate(rotated.tls_crt).verify_directly_issued_by(new_ca)
    # the next rotation drops the CA before last, and an expired previous CA is not carried
    again = certs.issue(names=NAMES, now=later + dt.timedelta(days=340), previous_ca=rotated.ca_crt)
    assert x509.load_pem_x509_certificates(again.ca_crt)[1] == new_ca
    assert len(x509.load_pem_x509_certificates(again.ca_crt)) == 2
    expired = certs.issue(names=NAMES, now=NOW + dt.timedelta(days=400), previous_ca=bundle.ca_crt)
    assert len(x509.load_pem_x509_certificates(expired.ca_crt)) == 1


def test_secret_data_round_trip(bundle: certs.Bundle) -> None:
    data = certs.to_secret_data(bundle)
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert certs.from_secret_data(data) == bundle
    assert certs.from_secret_data({"tls.crt": bundle.tls_crt}) is None


def test_files_are_written_once_and_the_key_privately(bundle: certs.Bundle, tmp_path: Path) -> None:
    files = certs.write_files(bundle, cert_dir=tmp_path / "certs")
    assert files.cert_file.read_bytes() == bundle.tls_crt
    assert files.key_file.read_bytes() == bundle.tls_key
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == bundle.ca_crt
    assert files.key_file.stat().st_mode & 0o777 == 0o600
    before = files.cert_file.stat().st_mtime_ns, files.cert_file.stat().st_ino
    certs.write_files(bundle, cert_dir=tmp_path / "certs")
    assert (files.cert_file.stat().st_mtime_ns, files.cert_file.stat().st_ino) == before
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


def test_mounted_files_must_exist(bundle: certs.Bundle, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tls\.crt"):
        certs.mounted(cert_dir=tmp_path)
    certs.write_files(bundle, cert_dir=tmp_path)
    assert certs.mounted(cert_dir=tmp_path) == certs.Files(
        cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key"
    )


def test_mode_selects_the_keeper(bundle: certs.Bundle, tmp_path: Path) -> None:
    for mode in ("cert-manager", "files"):
        keeper = certs.for_mode(mode=mode, cert_dir=tmp_path)
        assert isinstance(keeper, certs.Mounted)
        with pytest.raises(FileNotFoundError):
            keeper.start()
    certs.write_files(bundle, cert_dir=tmp_path)
    assert certs.for_mode(mode="files", cert_dir=tmp_path).start().cert_file == tmp_path / "tls.crt"
    with pytest.raises(ValueError, match="unknown webhook certificate mode"):
        certs.for_mode(mode="letsencrypt", cert_dir=tmp_path)
    with pytest.raises(ValueError, match="need an API client"):
        certs.for_mode(mode="self-signed", cert_dir=tmp_path)


# --- HTTPS server ----------------------------------------------------------------------------------


def datetime_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def live() -> certs.Bundle:
    """A certificate valid now: the TLS client checks validity against the real clock."""
    return certs.issue(names=NAMES, now=datetime_now())


class Recorder:
    """The real Admission handler, remembering the paths it served; fails on demand."""

    def __init__(self) -> None:
        self.handler = admission.Admission(
            resolver=DictResolver(), dry_run_job=JobValidator(), dry_run_namespace=OPERATOR_NAMESPACE
        )
        self.paths: list[str] = []

    def __call__(self, path: str, req: Mapping[str, Any]) -> dict[str, Any]:
        self.paths.append(path)
        if req.get("name") == "explode":
            raise RuntimeError("boom")
        return self.handler(path, req)


@pytest.fixture
def served(live: certs.Bundle, tmp_path: Path) -> Iterator[tuple[server.WebhookServer, Recorder, Path]]:
    files = certs.write_files(live, cert_dir=tmp_path)
    recorder = Recorder()
    webhook = server.WebhookServer(
        host="127.0.0.1", port=0, cert_file=files.cert_file, key_file=files.key_file, handler=recorder
    )
    assert not webhook.ready()
    webhook.start()
    try:
        yield webhook, recorder, tmp_path
    finally:
        webhook.stop()
    assert not webhook.ready()


def client(port: int, ca: bytes) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cadata=ca.decode())
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    is_json = response.getheader("Content-Type") == "application/json"
    return response.status, orjson.loads(data) if is_json else data


def review_of(req: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def test_https_round_trip(served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle) -> None:
    webhook, recorder, _ = served
    assert webhook.ready()
    assert webhook.port > 0
    conn = client(webhook.port, live.ca_crt)
    status, body = post(conn, "/validate-ctj?timeout=10s", review_of(request(ctj(dict(CONFIGMAP, kind="configmap")))))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "req-1"
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["message"] == "spec.resources[0]: resource kind does not exist: configmap (v1)"
    # same connection (keep-alive), another path
    status, body = post(conn, "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP))))
    assert status == 200
    assert body["response"] == {"uid": "req-1", "allowed": True}
    assert isinstance(conn.sock, ssl.SSLSocket)
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()
    assert recorder.paths == ["/validate-ctj", "/validate-ctj/spec"]


def test_https_rejects_unknown_paths_and_bad_bodies(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle
) -> None:
    webhook, recorder, _ = served
    status, _ = post(client(webhook.port, live.ca_crt), "/other", review_of(request(ctj(CONFIGMAP))))
    assert status == 404
    status, _ = post(client(webhook.port, live.ca_crt), "/mutate-ctj", review_of(request(ctj(CONFIGMAP))))
    assert status == 404  # defaults come from the CRD schema: there is no mutating webhook
    status, _ = post(client(webhook.port, live.ca_crt), "/validate-ctj", b"{not json")
    assert status == 400
    status, _ = post(client(webhook.port, live.ca_crt), "/validate-ctj", {"kind": "AdmissionReview"})
    assert status == 400
    assert recorder.paths == []


def test_handler_failure_is_a_denial_that_tells_nothing(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle
) -> None:
    webhook, _, _ = served
    req = dict(request(ctj(CONFIGMAP)), name="explode", uid="req-9")
    status, body = post(client(webhook.port, live.ca_crt), "/validate-ctj", review_of(req))
    assert status == 200
    assert body["response"]["uid"] == "req-9"
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 500
    assert "boom" not in body["response"]["status"]["message"]  # the log has it, the caller does not


def test_tls_1_2_is_the_minimum(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle, tmp_path: Path
) -> None:
    webhook, _, _ = served
    context = ssl.create_default_context(cadata=live.ca_crt.decode())
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=context, timeout=10)
    status, _ = post(conn, "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP))))
    assert status == 200
    assert isinstance(conn.sock, ssl.SSLSocket)
    assert conn.sock.version() == "TLSv1.2"
    files = certs.write_files(live, cert_dir=tmp_path / "other")
    loaded = server.Certificates(cert_file=files.cert_file, key_file=files.key_file)
    assert loaded.context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_untrusted_client_fails_verification(served: tuple[server.WebhookServer, Recorder, Path]) -> None:
    webhook, _, _ = served
    stranger = certs.issue(names=NAMES, now=datetime_now())
    with pytest.raises(ssl.SSLCertVerificationError):
        client(webhook.port, stranger.ca_crt).connect()


def test_changed_certificate_files_are_served_without_restart(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle
) -> None:
    webhook, _, cert_dir = served
    rotated = certs.issue(names=NAMES, now=datetime_now(), previous_ca=live.ca_crt)
    certs.write_files(rotated, cert_dir=cert_dir)
    conn = client(
        webhook.port, rotated.ca_crt.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )  # trusts only the new CA
    status, _ = post(conn, "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP))))
    assert status == 200
    served_cert = conn.sock.getpeercert(binary_form=True) if conn.sock else None
    assert served_cert == x509.load_pem_x509_certificate(rotated.tls_crt).public_bytes(Encoding.DER)
    with pytest.raises(ssl.SSLCertVerificationError):
        client(webhook.port, live.ca_crt).connect()  # the old certificate is no longer served


def test_half_written_pair_keeps_the_old_certificate(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle
) -> None:
    webhook, _, cert_dir = served
    other = certs.issue(names=NAMES, now=datetime_now())
    (cert_dir / "tls.key").write_bytes(other.tls_key)  # key replaced, certificate not yet
    status, _ = post(client(webhook.port, live.ca_crt), "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP))))
    assert status == 200
    (cert_dir / "tls.crt").write_bytes(other.tls_crt)
    status, _ = post(client(webhook.port, other.ca_crt), "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP))))
    assert status == 200


def test_slow_handshake_does_not_block_others(
    served: tuple[server.WebhookServer, Recorder, Path], live: certs.Bundle
) -> None:
    webhook, _, _ = served
    idle = socket.create_connection(("127.0.0.1", webhook.port))  # connects, never says hello
    try:
        done = threading.Event()

        def call() -> None:
            status, _ = post(
                client(webhook.port, live.ca_crt), "/validate-ctj/spec", review_of(request(ctj(CONFIGMAP)))
            )
            if status == 200:
                done.set()

        worker = threading.Thread(target=call)
        worker.start()
        worker.join(timeout=10)
        assert done.is_set()
    finally:
        idle.close()


# --- callers restricted to the API server's client certificate ------------------------------------


@dataclass
class _ClientCA:
    """A CA that signs client certificates (what an API server's admission kubeconfig would use)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca_crt_file: Path

    def issue(self, name: str, directory: Path) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime_now()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
        cert_file.write_bytes(leaf.public_bytes(Encoding.PEM))
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return cert_file, key_file


def _self_signed_ca(directory: Path) -> _ClientCA:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"client-ca-{directory.name}")])
    now = datetime_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca_file = directory / "client-ca.crt"
    ca_file.write_bytes(cert.public_bytes(Encoding.PEM))
    return _ClientCA(cert=cert, key=key, ca_crt_file=ca_file)


def test_with_a_client_ca_only_callers_it_signed_and_named_are_answered(live: certs.Bundle, tmp_path: Path) -> None:
    files = certs.write_files(live, cert_dir=tmp_path / "serving")
    client_ca = _self_signed_ca(tmp_path / "ca")
    webhook = server.WebhookServer(
        host="127.0.0.1",
        port=0,
        cert_file=files.cert_file,
        key_file=files.key_file,
        handler=Recorder(),
        client_ca_file=client_ca.ca_crt_file,
        client_names=["kube-apiserver"],
    )
    webhook.start()
    try:
        plain = client(webhook.port, live.ca_crt)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            post(plain, "/validate-ctj", review_of(request(ctj(CONFIGMAP))))

        def with_cert(cert: tuple[Path, Path]) -> http.client.HTTPSConnection:
            context = ssl.create_default_context(cadata=live.ca_crt.decode())
            context.load_cert_chain(certfile=cert[0], keyfile=cert[1])
            return http.client.HTTPSConnection("127.0.0.1", webhook.port, context=context, timeout=10)

        apiserver = client_ca.issue("kube-apiserver", tmp_path / "ca")
        status, body = post(with_cert(apiserver), "/validate-ctj", review_of(request(ctj(CONFIGMAP))))
        assert (status, body["response"]["allowed"]) == (200, True)

        someone = client_ca.issue("someone-else", tmp_path / "ca")
        status, body = post(with_cert(someone), "/validate-ctj", review_of(request(ctj(CONFIGMAP))))
        assert status == 403
        assert body == b"client certificate not allowed\n"

        stranger = _self_signed_ca(tmp_path / "other").issue("kube-apiserver", tmp_path / "other")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            post(with_cert(stranger), "/validate-ctj", review_of(request(ctj(CONFIGMAP))))
    finally:
        webhook.stop()


def test_stop_releases_the_port(live: certs.Bundle, tmp_path: Path) -> None:
    files = certs.write_files(live, cert_dir=tmp_path)
    webhook = server.WebhookServer(
        host="127.0.0.1", port=0, cert_file=files.cert_file, key_file=files.key_file, handler=Recorder()
    )
    webhook.start()
    port = webhook.port
    webhook.stop()
    again = server.WebhookServer(
        host="127.0.0.1", port=port, cert_file=files.cert_file, key_file=files.key_file, handler=Recorder()
    )
    again.start()
    try:
        assert again.port == port
    finally:
        again.stop()
    assert os.path.exists(files.cert_file)
