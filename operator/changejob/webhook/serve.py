"""Start the admission webhook inside the operator process: certificates, review logic, HTTPS."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client as k8s_client

from changejob import settings as settings_mod
from changejob.kube import access, discovery
from changejob.webhook import admission, certs, server


class Webhook:
    """The running webhook: its server and its certificate keeper."""

    def __init__(self, *, server_: server.WebhookServer, keeper: certs.SelfSigned | certs.Mounted) -> None:
        self.server = server_
        self.keeper = keeper

    def ready(self) -> bool:
        return self.server.ready()

    def stop(self) -> None:
        self.server.stop()
        self.keeper.stop()


def start(
    *, settings: settings_mod.Settings, api_client: k8s_client.ApiClient, discovery_: discovery.Discovery
) -> Webhook:
    cert_dir = Path(settings.webhook_cert_dir)
    cert_dir.mkdir(parents=True, exist_ok=True)
    keeper = certs.for_mode(
        mode=settings.webhook_cert_mode,
        cert_dir=cert_dir,
        api_client=api_client,
        namespace=settings.leader_election_namespace,
        service=settings.webhook_service,
        validating=settings.webhook_config or None,
        mutating=settings.webhook_mutating_config or None,
        loopback="127.0.0.1" in settings.webhook_extra_sans,
    )
    files = keeper.start()
    handler = admission.Admission(
        resolver=discovery_,
        dry_run_job=access.dry_run_job(api_client),
        dry_run_namespace=settings.leader_election_namespace,
        # With the policy API the API server checks tenancy itself; the webhook then asks no
        # access questions, so a forged review cannot use it to learn anyone's permissions.
        access=access.SubjectAccessChecker(api_client) if settings.webhook_tenancy == "webhook" else None,
    )
    srv = server.WebhookServer(
        host=settings.webhook_host,
        port=settings.webhook_port,
        cert_file=files.cert_file,
        key_file=files.key_file,
        handler=handler,
        client_ca_file=settings.webhook_client_ca_file or None,
        client_names=settings.webhook_client_names,
    )
    srv.start()
    return Webhook(server_=srv, keeper=keeper)
