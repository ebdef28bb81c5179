"""The chart's monitoring kit and OpenTelemetry resource, rendered offline with the pinned helm.

- PrometheusRule: `promtool check rules` on the rendered groups, and `promtool test rules` with
  tests/promtool/alerts_test.yaml (promtool built from the pinned Prometheus module);
- PodMonitor beside the ServiceMonitor;
- the Grafana dashboard ConfigMap for the sidecar;
- every metric name an alert or a dashboard query uses is one the operator exports, the list derived
  from operator/changejob/telemetry/metrics.py's registry (not written down by hand);
- OTEL_RESOURCE_ATTRIBUTES from the downward API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

import helpers
from changejob.telemetry import metrics

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
RELEASE = "kube-changejob"
NAMESPACE = "kube-changejob-system"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
ALERTS = (
    "ChangeJobNotActing",
    "ChangeJobShardsUnowned",
    "ChangeJobReconcileErrors",
    "ChangeJobAPIErrors",
    "ChangeJobWatchErrors",
)

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    return helpers.pinned_tool("helm")


@pytest.fixture(scope="module")
def promtool() -> str:
    return helpers.pinned_tool("promtool")


def render(helm: str, *sets: str) -> list[Doc]:
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


# --------------------------------------------------------------------------------------------------
# Metric names: what the operator exports, and what a PromQL expression uses


def exported_metric_names() -> set[str]:
    """Every series name /metrics can carry, from the registry's metric families and their types."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
        "info": ("_info",),
        "untyped": ("",),
    }
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names


PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"})
PROMQL_KEYWORDS |= {"unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL (or Grafana-templated PromQL) expression selects.

    Strings, label matchers, range selectors, grouping clauses and $variables are removed first; a
    remaining identifier is a metric name unless a parenthesis follows it (a function or an
    aggregation), it is a keyword, or it is glued to a number (the unit of a duration, 1e3).
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0).lower() in PROMQL_KEYWORDS:
            continue
        found.add(match.group(0))
    return found


def test_exported_names_come_from_the_registry() -> None:
    names = exported_metric_names()
    assert {"changejob_triggers_total", "changejob_change_to_job_seconds_bucket", "changejob_build_info"} <= names
    assert {"changejob_workqueue_depth", "process_resident_memory_bytes", "python_gc_collections_total"} <= names
    assert "changejob_triggers" not in names  # a counter is exported with its _total suffix only


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (result) (rate(changejob_triggers_total{namespace="a"}[5m]))', {"changejob_triggers_total"}),
        ("histogram_quantile(0.95, sum(rate(x_bucket[$__rate_interval])) by (le))", {"x_bucket"}),
        ('(sum(up{job="a"}) or vector(0)) == 0', {"up"}),
        ("a / on(pod) group_left b > 1e3 offset 5m", {"a", "b"}),
        ('label_values(changejob_build_info{namespace=~"$namespace"}, pod)', {"changejob_build_info", "pod"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_an_unknown_metric_is_caught() -> None:
    unknown = metric_names('sum(rate(changejob_jobs_failed_total{namespace="x"}[5m]))') - exported_metric_names()
    assert unknown == {"changejob_jobs_failed_total"}


# --------------------------------------------------------------------------------------------------
# PrometheusRule


@pytest.fixture(scope="module")
def rule(helm: str) -> Doc:
    [found] = of_kind(render(helm, "prometheusRule.enabled=true"), "PrometheusRule")
    return found


def _rules(rule: Doc) -> list[Doc]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_prometheus_rule_is_optional(helm: str) -> None:
    assert of_kind(render(helm), "PrometheusRule") == []


def test_prometheus_rule_has_the_documented_alerts(rule: Doc) -> None:
    assert [r["alert"] for r in _rules(rule)] == list(ALERTS)
    documented = (REPO / "docs" / "observability.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"\n#### {alert}\n" in documented, f"{alert} has no section in docs/observability.md"
        [r] = [r for r in _rules(rule) if r["alert"] == alert]
        anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == alert.lower()
        assert r["labels"]["severity"] in ("critical", "warning")


def test_alerts_use_only_exported_metrics(rule: Doc) -> None:
    exported = exported_metric_names()
    for r in _rules(rule):
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= exported, f"{r['alert']} uses {sorted(used - exported)}"


def test_alerts_select_the_release_namespace(rule: Doc, helm: str) -> None:
    for r in _rules(rule):
        assert f'namespace="{NAMESPACE}"' in r["expr"], r["alert"]
    [custom] = of_kind(
        render(
            helm,
            "prometheusRule.enabled=true",
            'prometheusRule.selector=job="ops"',
            "prometheusRule.alertLabels.team=platform",
            "prometheusRule.labels.release=prom",
        ),
        "PrometheusRule",
    )
    assert custom["metadata"]["labels"]["release"] == "prom"
    for r in _rules(custom):
        assert 'job="ops"' in r["expr"] and "namespace=" not in r["expr"]
        assert r["labels"]["team"] == "platform"


@pytest.fixture(scope="module")
def rules_dir(rule: Doc, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rules")
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(REPO / "tests" / "promtool" / "alerts_test.yaml", folder / "alerts_test.yaml")
    return folder


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(promtool: str, rules_dir: Path) -> None:
    result = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules(promtool: str, rules_dir: Path) -> None:
    result = run_promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", (rules_dir / "alerts_test.yaml").read_text()))
    assert tested == set(ALERTS), "every alert has a promtool test"


def test_promtool_test_rules_fails_on_a_broken_alert(promtool: str, rules_dir: Path, tmp_path: Path) -> None:
    """The promtool tests can fail: a threshold moved from 10% to 50% breaks them."""
    broken = (rules_dir / "rules.yaml").read_text().replace("> 0.1", "> 0.5")
    assert broken != (rules_dir / "rules.yaml").read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    shutil.copy(rules_dir / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    result = run_promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "ChangeJobReconcileErrors" in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# PodMonitor and ServiceMonitor


def test_pod_monitor_scrapes_the_operator_pods(helm: str) -> None:
    docs = render(helm, "podMonitor.enabled=true", "podMonitor.labels.release=prom", "podMonitor.interval=15s")
    [monitor] = of_kind(docs, "PodMonitor")
    [deployment] = of_kind(docs, "Deployment")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert endpoint["port"] in {p["name"] for p in ports}
    assert (endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == ("/metrics", "15s", "10s")
    assert of_kind(render(helm), "PodMonitor") == []


def test_pod_and_service_monitor_are_independent(helm: str) -> None:
    docs = render(helm, "podMonitor.enabled=true", "serviceMonitor.enabled=true")
    assert len(of_kind(docs, "PodMonitor")) == 1 and len(of_kind(docs, "ServiceMonitor")) == 1


# --------------------------------------------------------------------------------------------------
# Grafana dashboard


@pytest.fixture(scope="module")
def dashboard_map(helm: str) -> Doc:
    [found] = of_kind(
        render(helm, "grafanaDashboard.enabled=true", "grafanaDashboard.annotations.grafana_folder=Operators"),
        "ConfigMap",
    )
    return found


def _queries(dashboard: Doc) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", ())]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_dashboard_config_map_for_the_sidecar(dashboard_map: Doc, helm: str) -> None:
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_map["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    assert dashboard_map["metadata"]["namespace"] == NAMESPACE
    [name] = dashboard_map["data"]
    dashboard = json.loads(dashboard_map["data"][name])
    assert dashboard == json.loads((CHART / "dashboards" / "kube-changejob.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "kube-changejob"
    [moved] = of_kind(
        render(helm, "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"), "ConfigMap"
    )
    assert moved["metadata"]["namespace"] == "monitoring"
    assert of_kind(render(helm), "ConfigMap") == []


def test_dashboard_uses_only_exported_metrics(dashboard_map: Doc) -> None:
    dashboard = json.loads(next(iter(dashboard_map["data"].values())))
    exported = exported_metric_names()
    used: set[str] = set()
    for expr in _queries(dashboard):
        names = metric_names(expr) - {"pod", "namespace"}  # label_values(metric, label) names a label
        assert names, expr
        assert names <= exported, f"{expr} uses {sorted(names - exported)}"
        used |= names
    # Every operator metric has a panel (a new metric without one fails here).
    own = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported if n.startswith("changejob_")}
    covered = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert own <= covered, f"no panel shows {sorted(own - covered)}"


def test_dashboard_panels_have_unique_ids_and_datasource_variable(dashboard_map: Doc) -> None:
    dashboard = json.loads(next(iter(dashboard_map["data"].values())))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel.get("description"), panel["title"]


# --------------------------------------------------------------------------------------------------
# OpenTelemetry resource attributes


def _env(docs: list[Doc]) -> dict[str, Doc]:
    [deployment] = of_kind(docs, "Deployment")
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


OTEL_ON = ("otel.enabled=true", "otel.endpoint=http://collector:4318")


def test_otel_resource_attributes_only_with_tracing(helm: str) -> None:
    assert not {"OTEL_RESOURCE_ATTRIBUTES", "POD_UID", "NODE_NAME"} & set(_env(render(helm)))


def test_otel_resource_attributes_from_the_downward_api(helm: str) -> None:
    env = _env(render(helm, *OTEL_ON))
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    attributes = dict(pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
    assert attributes == {
        "service.name": "kube-changejob",
        "service.version": VERSION,
        "k8s.namespace.name": "$(POD_NAMESPACE)",
        "k8s.pod.name": "$(POD_NAME)",
        "k8s.pod.uid": "$(POD_UID)",
        "k8s.node.name": "$(NODE_NAME)",
        "k8s.deployment.name": f"{RELEASE}-controller-manager",
        "k8s.container.name": "manager",
    }
    # $(VAR) references expand only to variables defined earlier in the list.
    order = list(env)
    for var in ("POD_NAMESPACE", "POD_NAME", "POD_UID", "NODE_NAME"):
        assert order.index(var) < order.index("OTEL_RESOURCE_ATTRIBUTES")


def test_otel_resource_attributes_extra_and_encoded(helm: str) -> None:
    env = _env(
        render(
            helm,
            *OTEL_ON,
            "otel.resourceAttributes.deployment\\.environment\\.name=prod",
            "otel.resourceAttributes.team=a\\,b",
            "otel.serviceName=ctj",
            "image.tag=0.1.0-rc.1",
        )
    )
    value = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    attributes = dict(pair.split("=", 1) for pair in value.split(","))
    assert attributes["deployment.environment.name"] == "prod"
    assert attributes["team"] == "a%2Cb"  # a comma would split the list: percent-encoded
    assert attributes["service.name"] == "ctj"
    assert attributes["service.version"] == "0.1.0-rc.1"


def test_the_sdk_reads_the_rendered_attributes(helm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The value, with the downward API's variables expanded, is what OpenTelemetry's SDK parses."""
    from opentelemetry.sdk import resources

    value = _env(render(helm, *OTEL_ON, "otel.resourceAttributes.team=a\\,b"))["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    expanded = (
        value.replace("$(POD_NAMESPACE)", "ops")
        .replace("$(POD_NAME)", "p-1")
        .replace("$(POD_UID)", "u-1")
        .replace("$(NODE_NAME)", "n-1")
    )
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", expanded)
    detected = resources.OTELResourceDetector().detect().attributes
    assert detected["k8s.pod.name"] == "p-1" and detected["k8s.node.name"] == "n-1"
    assert detected["team"] == "a,b"
    assert detected["service.version"] == VERSION
