"""The Grafana dashboard and alert rules against the metrics contract in monitoring/metrics.txt."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.deploy.tools import REPO

MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "kvkit.json"
METRIC = re.compile(r"\b(?:kvkit|kvclient)_[a-z0-9_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SERVER_SCOPE = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'


def contract() -> dict[str, str]:
    """Metric family name -> type, as the exporters promise them."""
    lines = (MONITORING / "metrics.txt").read_text().splitlines()
    return dict(line.split() for line in lines if line.strip())


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in query_panels() for target in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def references(expression: str) -> list[tuple[str, str]]:
    """(metric family, histogram suffix or "") for every kvkit/kvclient series in a query."""
    families = contract()
    found = []
    for name in METRIC.findall(expression):
        suffix = next(
            (s for s in HISTOGRAM_SERIES if name.endswith(s) and name[: -len(s)] in families), ""
        )
        found.append((name[: -len(suffix)] if suffix else name, suffix))
    return found


def assert_compatible(expression: str) -> None:
    """Fail unless every metric in the query is in the contract and read as its type allows."""
    families = contract()
    for family, suffix in references(expression):
        assert family in families, f"{family} is not in monitoring/metrics.txt: {expression}"
        kind = families[family]
        if suffix:
            assert kind == "histogram", f"{family}{suffix}: {family} is a {kind}"
        else:
            assert kind != "histogram", f"{family} is a histogram: use _bucket, _sum or _count"
        read_as_rate = re.search(rf"(?:rate|increase)\(\s*{family}{suffix}\b", expression)
        if kind == "counter":
            assert read_as_rate, f"counter {family} must be read through rate()"
        if kind == "gauge":
            assert not read_as_rate, f"gauge {family} must not be read through rate()"


def test_metrics_contract_lists_names_with_known_types() -> None:
    """monitoring/metrics.txt holds one "name type" per line, counters named *_total."""
    for name, kind in contract().items():
        assert kind in {"counter", "gauge", "histogram"}, name
        assert name.endswith("_total") == (kind == "counter"), name


def test_panel_ids_are_unique() -> None:
    """No two panels share an id."""
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap() -> None:
    """Every panel has its own place on the 24-column grid."""
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_datasource_variable_is_declared() -> None:
    """The dashboard declares DS_PROMETHEUS, a variable of type datasource for Prometheus."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    """No panel or query is bound to a fixed data source."""
    for panel in query_panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_latency_panel_shows_p50_p95_and_p99_per_route() -> None:
    """Request latency quantiles are computed per route from the duration histogram."""
    expressions = dashboard_expressions()
    for quantile in ("0.5", "0.95", "0.99"):
        expected = (
            f"histogram_quantile({quantile}, sum by (le, route) "
            "(rate(kvkit_http_request_duration_seconds_bucket"
            f"{{{SERVER_SCOPE}}}[$__rate_interval])))"
        )
        assert expected in expressions


def test_every_server_query_is_scoped_by_namespace_job_and_instance() -> None:
    """A Prometheus holding dev and prod (or two jobs) never mixes them on one panel: every
    server series is selected by the three variables, every client series by namespace."""
    names = {var["name"] for var in dashboard()["templating"]["list"]}
    assert {"namespace", "job", "instance"} <= names
    for expr in dashboard_expressions():
        for name, labels in re.findall(
            r"\b((?:kvkit|kvclient|process)_[a-z0-9_]+)\{([^}]*)\}", expr
        ):
            wanted = 'namespace=~"$namespace"' if name.startswith("kvclient_") else SERVER_SCOPE
            assert labels.startswith(wanted), (name, expr)
        bare = re.findall(r"\b(?:kvkit|kvclient|process)_[a-z0-9_]+\b(?!\{)", expr)
        assert not bare, expr


def test_dashboard_shows_every_metric_in_the_contract() -> None:
    """Each exported metric, the service's and the client's, appears on some panel."""
    shown = {family for expr in dashboard_expressions() for family, _ in references(expr)}
    assert shown == set(contract())


def test_dashboard_queries_use_contract_metrics_by_their_type() -> None:
    """Dashboard queries name only contract metrics, each read as its type allows."""
    for expression in dashboard_expressions():
        assert_compatible(expression)


def test_alert_expressions_use_contract_metrics_by_their_type() -> None:
    """Alert rules name only contract metrics, each read as its type allows."""
    for expression in alert_expressions():
        assert_compatible(expression)


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    """The datasource reaches the compose Prometheus and the provider reads the mounted folder."""
    provisioning = MONITORING / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((provisioning / "dashboards/provider.yml").read_text())[
        "providers"
    ]
    grafana = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
