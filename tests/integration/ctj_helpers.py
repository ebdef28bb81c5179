"""Helpers for operator scenario tests: apply YAML with kubectl, read CTJs and Jobs, wait."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


# The user guide's first ChangeTriggeredJob, as written there (``{ns}``: the test namespace).
FIRST_TRIGGER = textwrap.dedent("""\
    apiVersion: triggers.changejob.dev/v1alpha
    kind: ChangeTriggeredJob
    metadata:
      name: my-first-trigger
    spec:
      jobTemplate:
        spec:
          template:
            spec:
              containers:
              - name: hello
                image: busybox:latest
                command: ["sh", "-c", "echo 'ConfigMap changed at:' $(date)"]
              restartPolicy: Never
      resources:
      - apiVersion: v1
        kind: ConfigMap
        name: my-config
        namespace: {ns}
    """)


def wait_until(fn: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; return that, or fail with the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last value {value!r}")
        time.sleep(interval)
        value = fn()
    return value


class Kube:
    """kubectl for one namespace, with JSON output parsed."""

    def __init__(self, *, kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str) -> None:
        self._kubectl = kubectl
        self.ns = namespace

    def run(self, *args: str, check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess[str]:
        return self._kubectl(*args, check=check, input=input_)

    def apply(self, obj: Mapping[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else yaml.safe_dump(dict(obj))
        self.run("apply", "-n", self.ns, "-f", "-", input_=text)

    def get(self, kind: str, name: str, *, namespaced: bool = True) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespaced:
            args += ["-n", self.ns]
        out = self.run(*args).stdout.strip()
        return json.loads(out) if out else None

    def ctj(self, name: str) -> dict[str, Any]:
        found = self.get("changetriggeredjob", name)
        assert found is not None, f"CTJ {name} not found"
        return found

    def ctjs(self) -> dict[str, dict[str, Any]]:
        """Every CTJ of the namespace by name, in one request."""
        out = self.run("get", "changetriggeredjobs", "-n", self.ns, "-o", "json").stdout
        return {c["metadata"]["name"]: c for c in json.loads(out)["items"]}

    def jobs(self, owner: str) -> list[dict[str, Any]]:
        out = self.run("get", "jobs", "-n", self.ns, "-l", f"changejob.dev/owner={owner}", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(items, key=lambda j: int(j["metadata"]["annotations"]["changejob.dev/trigger"]))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.run(
            "get",
            "events",
            "-n",
            self.ns,
            "--field-selector",
            f"involvedObject.name={name},involvedObject.kind=ChangeTriggeredJob",
            "-o",
            "json",
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def patch(self, kind: str, name: str, patch: Mapping[str, Any], *, namespaced: bool = True) -> None:
        args = ["patch", kind, name, "--type=merge", "-p", json.dumps(patch)]
        if namespaced:
            args += ["-n", self.ns]
        self.run(*args)


def condition(ctj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (ctj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def ctj_body(
    name: str,
    resources: Sequence[Mapping[str, Any]],
    *,
    cooldown: str | None = None,
    condition_: str | None = None,
    history: int | None = None,
    pod_labels: Mapping[str, str] | None = None,
    command: str = "echo changed",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "jobTemplate": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": dict(pod_labels or {})},
                    "spec": {
                        "containers": [{"name": "hello", "image": "busybox:latest", "command": ["sh", "-c", command]}],
                        "restartPolicy": "Never",
                    },
                },
            }
        },
        "resources": [dict(r) for r in resources],
    }
    if cooldown is not None:
        spec["cooldown"] = cooldown
    if condition_ is not None:
        spec["condition"] = condition_
    if history is not None:
        spec["history"] = history
    return {
        "apiVersion": "triggers.changejob.dev/v1alpha",
        "kind": "ChangeTriggeredJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def baseline_recorded(kube: Kube, name: str) -> Callable[[], bool]:
    def check() -> bool:
        status = kube.ctj(name).get("status") or {}
        entries = status.get("resourceHashes") or []
        return bool(entries) and all(e.get("lastTriggeredHash") for e in entries)

    return check


def configmaps_with_ctjs(
    namespace: str,
    count: int,
    *,
    config: Callable[[int], str],
    ctjs: Callable[[int], Sequence[str]],
    cooldown: str | None = None,
) -> str:
    """A multi-document manifest: ``count`` ConfigMaps named ``config(i)``, each watched by CTJs ``ctjs(i)``."""
    docs = []
    for i in range(count):
        name = config(i)
        docs.append(
            yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "0"}})
        )
        ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": namespace}]
        docs.extend(yaml.safe_dump(ctj_body(ctj, ref, cooldown=cooldown)) for ctj in ctjs(i))
    return "---\n".join(docs)
