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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHANGEJOB_", populate_by_name=True, extra="forbid")

    kubeconfig: str | None = Field(None, description="kubeconfig file; in-cluster config when unset")
    context: str | None = Field(None, description="kubeconfig context")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="namespaces whose CTJs are handled; empty: all"
    )
    poll_interval: timedelta = Field(
        timedelta(seconds=60),
        validation_alias=AliasChoices("poll_interval", "POLL_INTERVAL", "CHANGEJOB_POLL_INTERVAL"),
        description="period of the in-memory safety-net resync (detection itself is watch-driven)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_bind_address: str = Field(":8080", description='"0" disables')
    health_probe_bind_address: str = Field(":8081", description='"0" disables')
    leader_elect: bool = False
    leader_elect_lease_duration: timedelta = timedelta(seconds=15)
    leader_elect_renew_deadline: timedelta = timedelta(seconds=10)
    leader_elect_retry_period: timedelta = timedelta(seconds=2)
    leader_election_namespace: str = Field(default_factory=_default_namespace)
    shards: int = Field(16, ge=1, le=1024)
    identity: str = Field(default_factory=_default_identity)
    workers: int = Field(8, ge=1, le=64, description="reconcile workers (threads; mostly waiting on the API server)")
    watch_timeout: timedelta = timedelta(minutes=5)
    watch_stall_timeout: timedelta = timedelta(minutes=2)
    webhook_port: int = Field(0, ge=0, le=65535, description="0 disables the webhook server")
    webhook_host: str = "0.0.0.0"
    webhook_cert_mode: Literal["self-signed", "cert-manager", "files"] = "self-signed"
    webhook_cert_dir: str = "/tmp/k8s-webhook-server/serving-certs"
    webhook_service: str = "kube-changejob-webhook-service"
    webhook_config: str = "kube-changejob-validating-webhook"
    webhook_mutating_config: str = Field(
        "", description="a MutatingWebhookConfiguration whose caBundle to maintain too (none: the CRD defaults specs)"
    )
    webhook_extra_sans: Annotated[list[str], NoDecode] = Field(default_factory=list)
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
