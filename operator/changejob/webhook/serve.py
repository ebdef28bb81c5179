"""Start the admission webhook inside the operator process: certificates, review logic, HTTPS."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client as k8s_client

from changejob import settings as settings_mod
from changejob.kube import access, certstore, discovery
from changejob.webhook import admission, certs, server


class Webhook:
    """The running webhook: its server and, in self-signed mode, the certificate keeper."""

    def __init__(self, *, server_: server.WebhookServer, keeper: certs.SelfSigned | None) -> None:
        self.server = server_
        self.keeper = keeper

    def ready(self) -> bool:
        return self.server.ready()

    def stop(self) -> None:
        self.server.stop()
        if self.keeper is not None:
            self.keeper.stop()


def start(*, settings: settings_mod.Settings, api_client: k8s_client.ApiClient,
          discovery_: discovery.Discovery) -> Webhook:
    cert_dir = Path(settings.webhook_cert_dir)
    keeper: certs.SelfSigned | None = None
    if settings.webhook_cert_mode == "self-signed":
        cert_dir.mkdir(parents=True, exist_ok=True)
        names = certs.service_names(service=settings.webhook_service,
                                    namespace=settings.leader_election_namespace,
                                    loopback="127.0.0.1" in settings.webhook_extra_sans)
        keeper = certs.SelfSigned(
            store=certstore.SecretStore(api_client, namespace=settings.leader_election_namespace,
                                        name=f"{settings.webhook_service}-cert"),
            webhooks=certstore.WebhookConfigs(api_client, validating=settings.webhook_config or None,
                                              mutating=settings.webhook_mutating_config or None),
            names=names, cert_dir=cert_dir)
        files = keeper.start()
    else:
        files = certs.mounted(cert_dir=cert_dir)
    handler = admission.Admission(resolver=discovery_, access=access.SubjectAccessChecker(api_client),
                                  dry_run_job=access.dry_run_job(api_client))
    srv = server.WebhookServer(host=settings.webhook_host, port=settings.webhook_port,
                               cert_file=files.cert_file, key_file=files.key_file, handler=handler)
    srv.start()
    return Webhook(server_=srv, keeper=keeper)
