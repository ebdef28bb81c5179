"""Who asked the API server what: counters from kube-apiserver's own /metrics.

Two views, both diffs of two scrapes:

- **The operator's requests, exactly.** The operator runs under a ServiceAccount of its own. The
  benchmark installs API Priority and Fairness FlowSchemas that match only that ServiceAccount, one
  per (verb, resource) of interest, all mapped to the ``exempt`` priority level (no queuing, so they
  change nothing but the bookkeeping). ``apiserver_flowcontrol_dispatched_requests_total{flow_schema}``
  then counts the operator's requests by verb and resource, and nothing else: the control plane's
  own components and the benchmark use the admin certificate (``system:masters``), which the
  built-in ``exempt`` FlowSchema takes. A watch is counted when it is dispatched (started).
- **Everything, by verb and resource.** ``apiserver_request_total`` (a watch is counted when it
  ends), with the benchmark's own ``/metrics`` scrapes left out. Comparing a window with the
  operator running against one with it stopped gives the same figure by subtraction, as a check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

VERBS = ("watch", "list", "get", "create", "update", "patch", "delete")
RESOURCES: tuple[tuple[str, str], ...] = (  # (apiGroup, resource[/subresource])
    ("", "configmaps"),
    ("", "secrets"),
    ("apps", "deployments"),
    ("triggers.changejob.dev", "changetriggeredjobs"),
    ("triggers.changejob.dev", "changetriggeredjobs/status"),
    ("batch", "jobs"),
    ("", "events"),
    ("coordination.k8s.io", "leases"),
)
PREFIX = "bench-op"

_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _short(resource: str) -> str:
    return resource.replace("changetriggeredjobs", "ctjs").replace("/", "-")


def flow_schemas(*, service_account: str, namespace: str) -> list[dict[str, Any]]:
    """FlowSchemas that classify the operator's requests by verb and resource (and the rest)."""
    subject = [{"kind": "ServiceAccount", "serviceAccount": {"name": service_account, "namespace": namespace}}]
    out: list[dict[str, Any]] = []
    precedence = 10

    def schema(name: str, rules: list[dict[str, Any]]) -> None:
        nonlocal precedence
        out.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "changejob-bench"}},
                "spec": {
                    "priorityLevelConfiguration": {"name": "exempt"},
                    "matchingPrecedence": precedence,
                    "rules": rules,
                },
            }
        )
        precedence += 1

    for group, resource in RESOURCES:
        for verb in VERBS:
            schema(
                f"{PREFIX}-{verb}-{_short(resource)}",
                [
                    {
                        "subjects": subject,
                        "resourceRules": [
                            {
                                "verbs": [verb],
                                "apiGroups": [group],
                                "resources": [resource],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                    }
                ],
            )
    for verb in VERBS:
        schema(
            f"{PREFIX}-{verb}-other",
            [
                {
                    "subjects": subject,
                    "resourceRules": [
                        {
                            "verbs": [verb],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                }
            ],
        )
    schema(
        f"{PREFIX}-any-other",
        [
            {
                "subjects": subject,
                "resourceRules": [
                    {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": True}
                ],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }
        ],
    )
    return out


def _series(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    prefix = metric + "{"
    found = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels_part, _, value = line[len(prefix) :].rpartition("} ")
        found.append((dict(_LABELS.findall(labels_part)), float(value)))
    return found


def scrape(text: str) -> dict[str, dict[str, float]]:
    """The two views of one /metrics scrape: operator requests by FlowSchema, all by verb/resource."""
    operator: dict[str, float] = {}
    for labels, value in _series(text, "apiserver_flowcontrol_dispatched_requests_total"):
        name = labels.get("flow_schema", "")
        if name.startswith(PREFIX + "-"):
            key = name[len(PREFIX) + 1 :]
            operator[key] = operator.get(key, 0.0) + value
    everything: dict[str, float] = {}
    for labels, value in _series(text, "apiserver_request_total"):
        resource = labels.get("resource", "")
        sub = labels.get("subresource", "")
        if not resource:
            if sub == "/metrics":
                continue  # the benchmark's own scrapes
            key = f"{labels.get('verb', '')} {sub or '/'}"
        else:
            key = f"{labels.get('verb', '')} {resource}{'/' + sub if sub else ''}"
        everything[key] = everything.get(key, 0.0) + value
    return {"operator": operator, "all": everything}


Scrape = Mapping[str, Mapping[str, float]]


def diff(before: Scrape, after: Scrape) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for view in ("operator", "all"):
        delta = {k: after[view][k] - before[view].get(k, 0.0) for k in after[view]}
        out[view] = {k: v for k, v in sorted(delta.items()) if v}
    return out


def per_minute(counts: Mapping[str, float], seconds: float) -> dict[str, float]:
    return {k: v * 60.0 / seconds for k, v in counts.items()}


def is_lease(key: str) -> bool:
    return "leases" in key


def split_leases(counts: Mapping[str, float]) -> tuple[float, float]:
    """(non-Lease total, Lease total) of a view."""
    leases = sum(v for k, v in counts.items() if is_lease(k))
    return sum(counts.values()) - leases, leases


def top(counts: Mapping[str, float], n: int = 8) -> Sequence[tuple[str, float]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]
