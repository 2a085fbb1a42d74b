"""deploy/prometheus/alerts.yml and deploy/grafana/qlp-dashboard.json (issue 14): the rules file
has Prometheus' structure (promtool is not available here) and every metric the rules and the
dashboard use is one the bot exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from bot.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "qlp-dashboard.json"
EXPORTED = {"qlp_outbox_pending", "qlp_outbox_dead", "qlp_outbox_oldest_pending_seconds",
            "qlp_deployments_active", "qlp_deployment_active_seconds", "qlp_scheduler_leader",
            "qlp_worker_runs_in_progress"}


def _exported() -> set[str]:
    names = set(EXPORTED)
    for collector in Metrics().registry._collector_to_names:
        for family in collector.describe() if hasattr(collector, "describe") else ():
            names.update(sample_name for sample_name in _sample_names(family.name,
                                                                       family.type))
    return names


def _sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return {name}


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bqlp_[a-z_]+\b", expr))


def test_the_alert_rules_have_prometheus_structure() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    names = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "rules", "interval"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                                 "keep_firing_for"}
            assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
            assert rule["expr"].count("(") == rule["expr"].count(")")
            if "for" in rule:
                assert re.fullmatch(r"[0-9]+[smh]", rule["for"])
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            names.add(rule["alert"])
    assert {"QlpOutboxStuck", "QlpDeploymentRunningTooLong", "QlpNoSchedulerLeader",
            "QlpRollbackHappened"} <= names


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = _exported()
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    used = set().union(*(_metrics_in(rule["expr"]) for rule in rules))
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        used |= set().union(*(_metrics_in(t["expr"]) for t in panel["targets"]))
    assert used and used <= exported, used - exported
