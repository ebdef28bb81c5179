"""Operator configuration: flags override environment (``CHANGEJOB_*``, and the guide's
``POLL_INTERVAL``), which overrides defaults. Validated once at start-up by pydantic-settings."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from changejob.domain import api


def _default_namespace() -> str:
    if ns := os.environ.get("POD_NAMESPACE"):
        return ns
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return "kube-changejob-system"


def _default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


DEFAULTS_SHOWN = {
    "namespaces": "all",
    "leader_election_namespace": "$POD_NAMESPACE, else the service account's namespace, else kube-changejob-system",
    "identity": "$POD_NAME, else <hostname>-<pid>",
    "webhook_extra_sans": "none",
}
"""How ``--help`` states the defaults that are computed at start rather than fixed."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHANGEJOB_", populate_by_name=True, extra="forbid")

    kubeconfig: str | None = Field(
        None,
        description="kubeconfig file; unset: $KUBECONFIG, then ~/.kube/config, then the Pod's service account",
    )
    context: str | None = Field(None, description="kubeconfig context; unset: the kubeconfig's current context")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated namespaces whose CTJs are handled; empty: all namespaces"
    )
    poll_interval: timedelta = Field(
        timedelta(seconds=60),
        validation_alias=AliasChoices("poll_interval", "POLL_INTERVAL", "CHANGEJOB_POLL_INTERVAL"),
        description="period of the in-memory safety-net resync (detection itself is watch-driven)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="least severe level logged")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text for people or as one JSON object each for collectors"
    )
    metrics_bind_address: str = Field(":8080", description='address of the Prometheus /metrics endpoint; "0" disables')
    health_probe_bind_address: str = Field(":8081", description='address of /healthz and /readyz; "0" disables')
    leader_elect: bool = Field(
        False,
        description="share the CTJs between replicas through Lease-held shards; off: this process handles every CTJ",
    )
    leader_elect_lease_duration: timedelta = Field(
        timedelta(seconds=15), description="how long a Lease stays valid without renewal"
    )
    leader_elect_renew_deadline: timedelta = Field(
        timedelta(seconds=10), description="how long a replica keeps acting without a successful renewal"
    )
    leader_elect_retry_period: timedelta = Field(
        timedelta(seconds=2), description="interval between Lease renewals and acquisition attempts"
    )
    leader_election_namespace: str = Field(
        default_factory=_default_namespace,
        description="the operator's namespace: its Leases and hash-key Secret live there (it must exist)",
    )
    shards: int = Field(16, ge=1, le=1024, description="shards the CTJs are spread over (keep it >= replicas)")
    identity: str = Field(default_factory=_default_identity, description="this replica's name in its Leases")
    workers: int = Field(8, ge=1, le=64, description="reconcile workers (threads; mostly waiting on the API server)")
    watch_timeout: timedelta = Field(
        timedelta(minutes=5), description="how long one watch request stays open before it is renewed"
    )
    watch_stall_timeout: timedelta = Field(
        timedelta(minutes=2), description="a watch silent for longer (not even a bookmark) is restarted"
    )
    webhook_port: int = Field(0, ge=0, le=65535, description="port of the admission webhook server; 0 disables it")
    webhook_host: str = Field("0.0.0.0", description="address the webhook server listens on")
    webhook_cert_mode: Literal["self-signed", "cert-manager", "files"] = Field(
        "self-signed",
        description="where the webhook's serving certificate comes from: made and rotated by the operator, "
        "issued by cert-manager, or files mounted in --webhook-cert-dir",
    )
    webhook_cert_dir: str = Field(
        "/tmp/k8s-webhook-server/serving-certs", description="directory of tls.crt and tls.key (cert-manager, files)"
    )
    webhook_service: str = Field(
        "kube-changejob-webhook-service", description="the Service in front of the webhook (names the certificate)"
    )
    webhook_config: str = Field(
        "kube-changejob-validating-webhook", description="ValidatingWebhookConfiguration whose caBundle is kept current"
    )
    webhook_mutating_config: str = Field(
        "", description="a MutatingWebhookConfiguration whose caBundle to maintain too (none: the CRD defaults specs)"
    )
    webhook_extra_sans: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated extra DNS names of the self-signed serving certificate"
    )
    webhook_tenancy: Literal["policy", "webhook"] = Field(
        "policy",
        description="who checks that a CTJ's author may do what it asks: the chart's ValidatingAdmissionPolicy "
        "(policy), or this webhook with SubjectAccessReviews (webhook, for clusters without the policy API)",
    )
    webhook_client_ca_file: str = Field(
        "", description="require webhook callers to present a client certificate signed by this CA (PEM file)"
    )
    webhook_client_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="with a client CA: the certificate names (CN or DNS) allowed to call"
    )

    @field_validator(
        "poll_interval",
        "leader_elect_lease_duration",
        "leader_elect_renew_deadline",
        "leader_elect_retry_period",
        "watch_timeout",
        "watch_stall_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            return api.parse_duration(value)
        return value

    @field_validator("namespaces", "webhook_extra_sans", "webhook_client_names", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _election_timing(self) -> Settings:
        lease = self.leader_elect_lease_duration
        renew = self.leader_elect_renew_deadline
        retry = self.leader_elect_retry_period
        if not lease > renew:
            raise ValueError("--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline")
        if not renew > retry * 1.2:
            raise ValueError("--leader-elect-renew-deadline must be greater than 1.2 x --leader-elect-retry-period")
        if self.poll_interval <= timedelta(0):
            raise ValueError("--poll-interval must be positive")
        return self
