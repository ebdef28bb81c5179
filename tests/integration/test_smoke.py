"""Smoke tests of the test cluster itself: the API objects, controllers and policies the operator relies
on behave like a real cluster's (Jobs run to Complete or Failed, CRDs are served and validated, RBAC
is enforced), and the local control plane is reachable from this machine only.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import pathlib
import re
import secrets
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import exceptions as kube_exceptions
from kubernetes.utils import quantity

import helpers

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller"}


def _condition(obj: Any, kind: str) -> Any | None:
    """The status condition of type `kind` whose status is "True", if any."""
    for cond in obj.status.conditions or []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def _job(name: str, *, labels: dict[str, str] | None = None) -> client.V1Job:
    """A Job with one pod and no retries; the kwok Stages decide whether its pod succeeds."""
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels or {}),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="example.invalid/smoke:1")],
                ),
            ),
        ),
    )


def _requires_managed(cluster: helpers.Cluster) -> None:
    if not cluster.managed:
        pytest.skip(f"needs tools/cluster.sh's control plane, not the {cluster.backend} cluster {cluster.name}")


def test_configmap_and_secret_round_trip(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"mode": "fast"}),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "hunter2"}),
    )
    core.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "slow"}})

    settings = core.read_namespaced_config_map("settings", namespace)
    creds = core.read_namespaced_secret("creds", namespace)
    assert settings.data == {"mode": "slow"}
    assert int(settings.metadata.resource_version) > 0
    # The API server folds stringData into base64 data; the client returns it encoded.
    assert creds.string_data is None
    assert base64.b64decode(creds.data["password"]) == b"hunter2"


def test_custom_resource_is_served_and_validated(api_client: client.ApiClient, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    group, suffix = "smoke.changejob.dev", secrets.token_hex(3)
    plural, kind = f"widgets{suffix}", f"Widget{suffix.upper()}"
    schema = client.V1JSONSchemaProps(
        type="object",
        properties={
            "spec": client.V1JSONSchemaProps(
                type="object",
                required=["size"],
                properties={
                    "size": client.V1JSONSchemaProps(type="integer", minimum=1),
                    "color": client.V1JSONSchemaProps(type="string", enum=["red", "blue"]),
                },
            )
        },
    )
    crd = client.V1CustomResourceDefinition(
        metadata=client.V1ObjectMeta(name=f"{plural}.{group}"),
        spec=client.V1CustomResourceDefinitionSpec(
            group=group,
            scope="Namespaced",
            names=client.V1CustomResourceDefinitionNames(plural=plural, singular=plural, kind=kind),
            versions=[
                client.V1CustomResourceDefinitionVersion(
                    name="v1",
                    served=True,
                    storage=True,
                    schema=client.V1CustomResourceValidation(open_apiv3_schema=schema),
                )
            ],
        ),
    )
    extensions.create_custom_resource_definition(crd)
    try:
        helpers.wait_for(
            lambda: _condition(extensions.read_custom_resource_definition(f"{plural}.{group}"), "Established"),
            timeout=30,
            message=f"CRD {plural}.{group} Established",
        )

        def create_widget() -> Any:
            body = {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w1"}, "spec": {"size": 3}}
            try:
                return custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)
            except kube_exceptions.ApiException as exc:
                if exc.status == 404:  # established, but not yet in this server's discovery
                    return None
                raise

        created = helpers.wait_for(create_widget, timeout=30, message=f"creating a {kind}")
        assert created["metadata"]["generation"] == 1
        custom.patch_namespaced_custom_object(group, "v1", namespace, plural, "w1", {"spec": {"color": "red"}})
        widget = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w1")
        assert widget["spec"] == {"size": 3, "color": "red"}
        assert widget["metadata"]["generation"] == 2

        invalid = {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w2"}, "spec": {"size": 0}}
        with pytest.raises(kube_exceptions.ApiException) as rejected:
            custom.create_namespaced_custom_object(group, "v1", namespace, plural, invalid)
        assert rejected.value.status == 422
        assert "spec.size" in rejected.value.body
    finally:
        extensions.delete_custom_resource_definition(f"{plural}.{group}")


def test_job_runs_to_complete(api_client: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, _job("succeeds"))

    job = helpers.wait_for(
        lambda: (j := batch.read_namespaced_job_status("succeeds", namespace)) and _condition(j, "Complete") and j,
        timeout=60,
        message="Job succeeds to be Complete",
    )
    assert job.status.succeeded == 1
    assert not job.status.failed
    assert _condition(job, "Failed") is None


def test_job_with_fail_label_fails(api_client: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api_client)
    core = client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, _job("fails", labels={helpers.FAIL_LABEL: "true"}))

    job = helpers.wait_for(
        lambda: (j := batch.read_namespaced_job_status("fails", namespace)) and _condition(j, "Failed") and j,
        timeout=60,
        message="Job fails to be Failed",
    )
    assert job.status.failed == 1
    assert not job.status.succeeded
    assert _condition(job, "Failed").reason == "BackoffLimitExceeded"
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=fails").items
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1


def _token_client(api_client: client.ApiClient, token: str) -> client.ApiClient:
    """A client of the same API server that authenticates with a bearer token only."""
    admin = api_client.configuration
    cfg = client.Configuration()
    cfg.host = admin.host
    cfg.ssl_ca_cert = admin.ssl_ca_cert
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_rbac_is_enforced(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    reader_account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    core.create_namespaced_service_account(namespace, reader_account)
    token_request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("reader", namespace, token_request).status.token

    with _token_client(api_client, token) as reader_client, _token_client(api_client, "not-a-token") as bogus:
        reader = client.CoreV1Api(reader_client)
        # Authenticated (not 401) as the ServiceAccount, but without a Role nothing is allowed.
        with pytest.raises(kube_exceptions.ApiException) as denied:
            reader.list_namespaced_config_map(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in denied.value.body
        with pytest.raises(kube_exceptions.ApiException) as unauthenticated:
            client.CoreV1Api(bogus).list_namespaced_config_map(namespace)
        assert unauthenticated.value.status == 401

        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="read-configmaps"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
            ),
        )
        # The grant takes effect (the token works), and only for what it names.
        helpers.wait_for(
            lambda: reader.list_namespaced_config_map(namespace),
            timeout=30,
            message="the Role to allow listing ConfigMaps",
            ignoring=(kube_exceptions.ApiException,),
        )
        with pytest.raises(kube_exceptions.ApiException) as still_denied:
            reader.list_namespaced_secret(namespace)
        assert still_denied.value.status == 403


def test_apiserver_metrics_readable_with_admin_kubeconfig(cluster: helpers.Cluster) -> None:
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout
    assert re.search(r'^apiserver_request_total\{.*verb="GET".*\} \d+', metrics, re.MULTILINE)


def test_fake_node_is_ready(api_client: client.ApiClient, cluster: helpers.Cluster) -> None:
    _requires_managed(cluster)
    node = client.CoreV1Api(api_client).read_node(helpers.KWOK_NODE_NAME)
    assert _condition(node, "Ready") is not None
    assert node.metadata.labels["type"] == "kwok"
    # Room for the many short-lived Job pods of benchmarks.
    assert quantity.parse_quantity(node.status.allocatable["pods"]) >= 10000


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(match.group(1)))
    return inodes


def _decode_address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """Decode a /proc/net/{tcp,udp}{,6} local address: host-order 32-bit words, then a hex port."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.IPv4Address(words) if len(words) == 4 else ipaddress.IPv6Address(words)
    return address, int(port, 16)


def _bound_sockets() -> dict[int, tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Listening TCP and bound UDP sockets of this network namespace, by inode."""
    sockets = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = pathlib.Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            address, port = _decode_address(local)
            listening = state == "0A" if table.startswith("tcp") else port != 0
            if listening:
                sockets[inode] = (table, address, port)
    return sockets


def test_control_plane_listens_only_on_loopback(cluster: helpers.Cluster) -> None:
    _requires_managed(cluster)
    pids = cluster.component_pids()
    assert set(pids) == COMPONENTS
    bound = _bound_sockets()
    for component, pid in pids.items():
        sockets = [bound[inode] for inode in _socket_inodes(pid) if inode in bound]
        assert any(table.startswith("tcp") for table, _, _ in sockets), f"{component} listens on nothing"
        for table, address, port in sockets:
            assert address == ipaddress.IPv4Address("127.0.0.1"), f"{component} bound {table} {address}:{port}"


@pytest.mark.slow
def test_apiserver_restart_keeps_state(cluster: helpers.Cluster, api_client: client.ApiClient, namespace: str) -> None:
    _requires_managed(cluster)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="survivor"), data={"k": "v"})
    )
    before = cluster.component_pids()

    cluster.restart_apiserver()

    after = cluster.component_pids()
    assert after["kube-apiserver"] != before["kube-apiserver"]
    assert {c: p for c, p in after.items() if c != "kube-apiserver"} == {
        c: p for c, p in before.items() if c != "kube-apiserver"
    }
    survivor = helpers.wait_for(
        lambda: core.read_namespaced_config_map("survivor", namespace),
        timeout=30,
        message="reading the ConfigMap after the restart",
        ignoring=(kube_exceptions.ApiException, urllib3.exceptions.HTTPError),
    )
    assert survivor.data == {"k": "v"}
