"""Prometheus configuration and alert rules, checked and unit-tested by promtool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run_tool

PROMETHEUS = REPO / "monitoring" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return [case for test in tests for case in test["alert_rule_test"]]


def promtool(*args: str) -> str:
    result = run_tool("promtool", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_prometheus_config_passes_promtool_check(config: str) -> None:
    """Both Prometheus configurations, with their rule files, are valid."""
    promtool("check", "config", str(PROMETHEUS / config))


def test_alert_rules_pass_promtool_check() -> None:
    """The alert rules parse and their PromQL is valid."""
    promtool("check", "rules", str(ALERTS))


def test_alert_rules_pass_their_unit_tests() -> None:
    """Every alert fires, and stays quiet, exactly when its unit tests say."""
    promtool("test", "rules", str(ALERT_TESTS))


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    """No alert is left without a promtool test that sees it fire."""
    fired = {case["alertname"] for case in alert_cases() if case["exp_alerts"]}
    assert {rule["alert"] for rule in alert_rules()} <= fired


def test_every_alert_has_a_unit_test_where_it_stays_quiet() -> None:
    """Each alert is also shown not to fire, before its duration or below its threshold."""
    quiet = {case["alertname"] for case in alert_cases() if not case["exp_alerts"]}
    assert {rule["alert"] for rule in alert_rules()} <= quiet


def test_every_alert_waits_has_a_severity_and_explains_itself() -> None:
    """Alerts carry for:, a severity label and summary/description annotations."""
    for rule in alert_rules():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool accepts every Grafana query (Grafana's $__rate_interval read as 5m)."""
    dashboard = json.loads((REPO / "monitoring/grafana/dashboards/kvkit.json").read_text())
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}:{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "5m"),
        }
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(rules_file))
