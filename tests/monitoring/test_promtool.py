"""Prometheus configuration and alert rules, checked and unit-tested by promtool."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run_tool

PROMETHEUS = REPO / "monitoring" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules; the recording rules beside them have no for:, labels or tests."""
    return [rule for rule in rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "record" in rule]


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
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_is_aggregated_by_namespace_and_job_or_finer() -> None:
    """No alert sums dev and prod (or two jobs) into one series: every aggregation keeps
    namespace and job, and absent() is the one alert about there being no series at all."""
    for rule in alert_rules() + recording_rules():
        expr = rule["expr"]
        for by in re.findall(r"\b(?:sum|max|min|avg|count)\b\s*(by\s*\([^)]*\))?\s*\(", expr):
            assert by, f"aggregation without by(): {expr}"
            assert {"namespace", "job"} <= set(re.findall(r"\w+", by)[1:]), expr


def test_slo_alerts_read_every_window_of_the_workbook() -> None:
    """Page on 1h+5m or 6h+30m, ticket on 1d+2h or 3d+6h: each window's recording rule exists
    and each burn-rate alert names its four windows."""
    recorded = {rule["record"] for rule in recording_rules()}
    windows = {
        "FastBurn": ("1h", "5m", "6h", "30m"),
        "SlowBurn": ("1d", "2h", "3d", "6h"),
    }
    slo_alerts = [rule for rule in alert_rules() if rule["alert"].endswith("Burn")]
    assert {rule["alert"] for rule in slo_alerts} == {
        f"Kvkit{slo}{speed}" for slo in ("Availability", "Latency") for speed in windows
    }
    for rule in slo_alerts:
        speed = rule["alert"].removeprefix("KvkitAvailability").removeprefix("KvkitLatency")
        used = set(re.findall(r"namespace_job:[a-z_]+:ratio_rate\w+", rule["expr"]))
        assert used <= recorded, rule["alert"]
        assert {name.rsplit("ratio_rate", 1)[1] for name in used} == set(windows[speed])


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
