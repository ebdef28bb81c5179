"""``kubectl changejob``: the installed console script, run by the real kubectl as a plugin.

Every command goes through ``.tools/bin/kubectl changejob ...`` with the virtualenv's bin directory
(where ``pip install`` put ``kubectl-changejob``) on PATH, as a user runs it: kubectl finds the
plugin, the plugin reads KUBECONFIG (or --kubeconfig/--context) and talks to the local cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import rbac_helpers
import yaml
from ctj_helpers import Kube, baseline_recorded, condition, ctj_body, wait_until
from operator_proc import OperatorProcess

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
REQUEST = "changejob.dev/trigger-request"
OBJECT = "changetriggeredjob.triggers.changejob.dev"

Plugin = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def plugin(cluster: Any, crd: None) -> Plugin:
    """Run ``kubectl changejob ARGS`` with KUBECONFIG pointing at the test cluster (unless ``env`` says)."""
    if not (BIN / "kubectl-changejob").exists():
        pytest.fail(f"kubectl-changejob is not installed in {BIN}: pip install -e . (make venv)", pytrace=False)

    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(cluster.kubeconfig),
            **(env or {}),
        }
        return subprocess.run(
            [str(cluster.kubectl_path), "changejob", *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def config_ref(kube: Kube, name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": kube.ns, **extra}


def configmap(kube: Kube, name: str) -> None:
    kube.run("create", "configmap", name, "-n", kube.ns, "--from-literal=k=v")


def waiting(text: str) -> list[str]:
    part = text.split("Waiting for:", 1)[1].split("\n\n", 1)[0]
    return [line[4:] for line in part.splitlines() if line.startswith("  - ")]


def handles_manual_triggers(cluster: Any) -> bool:
    """Whether the installed CRD has status.lastTriggerRequest (the operator's manual trigger)."""
    crd = json.loads(cluster.kubectl("get", "crd", "changetriggeredjobs.triggers.changejob.dev", "-o", "json").stdout)
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    return "lastTriggerRequest" in status


# --------------------------------------------------------------------------------------------------
# kubectl finds it


def test_kubectl_runs_the_installed_plugin(cluster: Any, plugin: Plugin) -> None:
    listed = subprocess.run(
        [str(cluster.kubectl_path), "plugin", "list", "--name-only"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        timeout=60,
        check=False,
    )
    assert "kubectl-changejob" in listed.stdout.split(), listed.stdout + listed.stderr
    assert ok(plugin("--version")).startswith("kubectl-changejob ")
    assert ok(plugin("--help")).startswith("usage: kubectl changejob ")


def test_missing_ctj_is_exit_code_3(kube: Kube, plugin: Plugin) -> None:
    for command in ("why", "trigger", "suspend", "resume"):
        one_line(
            plugin(command, "nope", "-n", kube.ns),
            3,
            f'changetriggeredjobs.triggers.changejob.dev "nope" not found in namespace "{kube.ns}"',
        )


# --------------------------------------------------------------------------------------------------
# trigger


def test_trigger_sets_a_fresh_request_without_touching_the_spec(kube: Kube, plugin: Plugin) -> None:
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")]))
    before = kube.ctj("watcher")["metadata"]

    out = ok(plugin("trigger", "watcher", "-n", kube.ns))
    assert out.startswith(f"{OBJECT}/watcher trigger requested ({REQUEST}=")
    first = out.strip().rsplit("=", 1)[1].rstrip(")")
    after = kube.ctj("watcher")["metadata"]
    assert after["annotations"][REQUEST] == first
    assert after["generation"] == before["generation"]  # metadata only: no new spec generation

    assert ok(plugin("trigger", "watcher", "-n", kube.ns, "-o", "name")).strip() == f"{OBJECT}/watcher"
    second = kube.ctj("watcher")["metadata"]["annotations"][REQUEST]
    assert second != first and second > first  # fresh, and later values sort later


def test_trigger_wait_times_out_when_no_operator_handles_it(kube: Kube, plugin: Plugin) -> None:
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")]))
    started = time.monotonic()
    result = plugin("trigger", "watcher", "-n", kube.ns, "--wait", "--timeout=2s")
    line = one_line(result, 5, "timed out after 2s waiting for watcher to handle trigger request")
    assert "status.lastTriggerRequest: unset" in line
    assert time.monotonic() - started < 30
    value = kube.ctj("watcher")["metadata"]["annotations"][REQUEST]
    assert value in line and value in result.stdout


def test_trigger_wait_with_the_operator(cluster: Any, kube: Kube, operator: OperatorProcess, plugin: Plugin) -> None:
    """With manual triggers in the operator, --wait prints the Job made for the request; before
    they exist, it times out with exit code 5 and the request stays recorded on the CTJ."""
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")], cooldown="1h"))
    wait_until(baseline_recorded(kube, "watcher"), what="baseline")
    if not handles_manual_triggers(cluster):
        result = plugin("trigger", "watcher", "-n", kube.ns, "--wait", "--timeout=3s", "-o", "name")
        one_line(result, 5, "timed out after 3s", "is the operator running, and does it handle")
        assert kube.ctj("watcher")["metadata"]["annotations"][REQUEST]
        assert kube.jobs("watcher") == []
        return
    out = ok(plugin("trigger", "watcher", "-n", kube.ns, "--wait", "--timeout=60s", "-o", "name"))
    job_name = out.strip().removeprefix("job.batch/")
    ctj = kube.ctj("watcher")
    value = ctj["metadata"]["annotations"][REQUEST]
    assert ctj["status"]["lastTriggerRequest"] == value
    [job] = [j for j in kube.jobs("watcher") if j["metadata"]["name"] == job_name]
    assert job["metadata"]["annotations"][REQUEST] == value


# --------------------------------------------------------------------------------------------------
# suspend / resume


def test_suspend_and_resume_patch_spec_suspend(kube: Kube, plugin: Plugin) -> None:
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")]))
    assert kube.ctj("watcher")["spec"]["suspend"] is False  # the CRD's default
    generation = kube.ctj("watcher")["metadata"]["generation"]

    assert ok(plugin("suspend", "watcher", "-n", kube.ns)) == f"{OBJECT}/watcher suspended\n"
    ctj = kube.ctj("watcher")
    assert (ctj["spec"]["suspend"], ctj["metadata"]["generation"]) == (True, generation + 1)
    assert ok(plugin("suspend", "watcher", "-n", kube.ns)) == f"{OBJECT}/watcher already suspended\n"
    assert kube.ctj("watcher")["metadata"]["generation"] == generation + 1  # nothing written
    assert "history 5, suspended" in ok(plugin("why", "watcher", "-n", kube.ns)).splitlines()[0]

    assert ok(plugin("resume", "watcher", "-n", kube.ns)) == f"{OBJECT}/watcher resumed\n"
    assert kube.ctj("watcher")["spec"]["suspend"] is False
    assert ok(plugin("resume", "watcher", "-n", kube.ns)) == f"{OBJECT}/watcher not suspended\n"


# --------------------------------------------------------------------------------------------------
# Who may do what; where the namespace comes from


def test_a_reader_may_explain_but_not_trigger_or_suspend(
    admin: rbac_helpers.Kubectl, kube: Kube, namespace: str, plugin: Plugin, tmp_path: Path
) -> None:
    """The namespace comes from the kubeconfig's context (no -n), as in kubectl; writes are refused (4)."""
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")]))
    reader = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "ctj-reader"},
        "rules": [
            {
                "apiGroups": ["triggers.changejob.dev"],
                "resources": ["changetriggeredjobs"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "ctj-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ctj-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    admin("create", "serviceaccount", "reader", "-n", namespace)
    admin("apply", "-n", namespace, "-f", "-", input_=yaml.safe_dump_all([reader, binding]))
    config = rbac_helpers.service_account_kubeconfig(
        admin=admin, namespace=namespace, service_account="reader", path=tmp_path / "reader.yaml"
    )
    user = f"system:serviceaccount:{namespace}:reader"
    rbac_helpers.wait_granted(
        lambda: admin.can_i("get", "changetriggeredjobs", "-n", namespace, as_user=user), what="the reader's Role"
    )
    env = {"KUBECONFIG": str(config)}

    assert ok(plugin("why", "watcher", env=env)).startswith(f"ChangeTriggeredJob {namespace}/watcher:")
    for command in ("trigger", "suspend"):
        one_line(plugin(command, "watcher", env=env), 4, "forbidden", user)
    assert REQUEST not in (kube.ctj("watcher")["metadata"].get("annotations") or {})


def test_kubeconfig_and_context_flags(cluster: Any, kube: Kube, plugin: Plugin, tmp_path: Path) -> None:
    configmap(kube, "cfg")
    kube.apply(ctj_body("watcher", [config_ref(kube, "cfg")]))
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    base = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append({"name": "tests", "context": {**base["context"], "namespace": kube.ns}})
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"KUBECONFIG": str(tmp_path / "absent")}

    out = ok(plugin("why", "watcher", f"--kubeconfig={path}", "--context", "tests", env=env))
    assert out.startswith(f"ChangeTriggeredJob {kube.ns}/watcher:")
    one_line(
        plugin("why", "watcher", f"--kubeconfig={path}", env=env),
        3,
        f'"watcher" not found in namespace "{base["context"].get("namespace") or "default"}"',
    )
    one_line(
        plugin("--kubeconfig", str(path), "--context=nope", "why", "watcher", env=env),
        1,
        f'context "nope" does not exist in kubeconfig {path}',
    )


# --------------------------------------------------------------------------------------------------
# why, on live CTJs in each state the operator reports


def _state(kube: Kube, name: str, check: Callable[[Mapping[str, Any]], bool], what: str) -> None:
    wait_until(lambda: check(kube.ctj(name)), timeout=60, what=f"{name}: {what}")


def _progressing(reason: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda ctj: (condition(ctj, "Progressing") or {}).get("reason") == reason


def test_why_on_live_ctjs(kube: Kube, operator: OperatorProcess, plugin: Plugin) -> None:
    for name in ("idle-cfg", "deferred-cfg", "all-a", "all-b"):
        configmap(kube, name)
    kube.apply(ctj_body("idle", [config_ref(kube, "idle-cfg", fields=["data.k"])], cooldown="0s"))
    kube.apply(ctj_body("deferred", [config_ref(kube, "deferred-cfg")], cooldown="1h"))
    kube.apply(ctj_body("missing", [config_ref(kube, "nope")], cooldown="0s"))
    kube.apply(ctj_body("partial", [config_ref(kube, "all-a"), config_ref(kube, "all-b")], condition_="All"))
    kube.apply(ctj_body("broken", [config_ref(kube, "idle-cfg", fields=["data["])]))
    for name in ("idle", "deferred", "partial"):
        wait_until(baseline_recorded(kube, name), what=f"baseline of {name}")

    # deferred: a first change triggers at once, the second waits for the cooldown.
    kube.patch("configmap", "deferred-cfg", {"data": {"k": "1"}})
    _state(kube, "deferred", lambda c: (c.get("status") or {}).get("triggerCount") == 1, "first Job")
    kube.patch("configmap", "deferred-cfg", {"data": {"k": "2"}})
    _state(kube, "deferred", _progressing("CooldownDeferred"), "deferred")
    # partial: one of two resources changed under condition All.
    kube.patch("configmap", "all-a", {"data": {"k": "1"}})
    _state(kube, "partial", lambda c: any(e.get("changed") for e in c["status"]["resourceHashes"]), "all-a changed")
    _state(kube, "missing", lambda c: (condition(c, "Ready") or {}).get("reason") == "ResourceMissing", "missing")
    _state(kube, "broken", lambda c: (condition(c, "Ready") or {}).get("reason") == "InvalidSpec", "invalid")

    def why(name: str) -> str:
        return ok(plugin("why", name, "-n", kube.ns))

    idle = why("idle")
    assert "Ready: True (Reconciled)" in idle
    assert f"ConfigMap {kube.ns}/idle-cfg  Present    unchanged since the last trigger" in idle
    assert waiting(idle) == [
        "a change of any watched resource (condition Any): nothing has changed since the last trigger"
    ]
    assert "Jobs: none (label changejob.dev/owner=idle)" in idle

    deferred = why("deferred")
    [item] = waiting(deferred)
    assert item.startswith("the cooldown (1h) to end: the deferred trigger fires at ") and "(in 59m)" in item
    assert f"ConfigMap {kube.ns}/deferred-cfg  Present    changed since the last trigger: *" in deferred
    job = kube.jobs("deferred")[0]["metadata"]["name"]
    assert f"  #1  {job}  " in deferred and f"ConfigMap/{kube.ns}/deferred-cfg:*" in deferred

    missing = why("missing")
    assert f"ConfigMap {kube.ns}/nope  Missing  " in missing
    assert waiting(missing) == [f"ConfigMap {kube.ns}/nope to exist: ConfigMap/{kube.ns}/nope not found"]

    partial = why("partial")
    assert waiting(partial) == [
        f"a change of ConfigMap {kube.ns}/all-b (condition All: every resource must change since the last "
        f"trigger; changed so far: ConfigMap {kube.ns}/all-a)"
    ]

    broken = why("broken")
    [item] = waiting(broken)
    assert item.startswith('a fix of the spec: it is invalid: spec.resources[0].fields[0]: invalid field path "data["')
    assert item.endswith(f"(kubectl edit changetriggeredjob broken -n {kube.ns})")
    assert f"ConfigMap {kube.ns}/idle-cfg  not watched: the spec is invalid" in broken


def test_the_manual_run_example(kube: Kube, operator: OperatorProcess, plugin: Plugin) -> None:
    """examples/manual-run.yaml, applied to the test namespace, explained before and after its ConfigMap exists."""
    text = (Path(__file__).resolve().parents[2] / "examples" / "manual-run.yaml").read_text()
    kube.apply(text.replace("namespace: default", f"namespace: {kube.ns}"))
    _state(kube, "db-migrate", lambda c: (condition(c, "Ready") or {}).get("reason") == "ResourceMissing", "missing")
    assert waiting(ok(plugin("why", "db-migrate", "-n", kube.ns))) == [
        f"ConfigMap {kube.ns}/migrations to exist: ConfigMap/{kube.ns}/migrations not found"
    ]
    configmap(kube, "migrations")
    wait_until(baseline_recorded(kube, "db-migrate"), what="baseline")
    text = ok(plugin("why", "db-migrate", "-n", kube.ns))
    assert text.startswith(f"ChangeTriggeredJob {kube.ns}/db-migrate: condition Any, cooldown 5m, history 3")
    assert f"ConfigMap {kube.ns}/migrations  Present    unchanged since the last trigger" in text
