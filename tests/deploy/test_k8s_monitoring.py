"""The optional monitoring kustomizations: ServiceMonitor, PrometheusRule, dashboard ConfigMap."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run_tool

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
OPTIONAL = ("optional/servicemonitor", "optional/prometheusrule", "optional/dashboard")
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "kvkit.json"
DEFAULT_RELEASE = "kube-prometheus-stack"
# Fields the Prometheus Operator's PrometheusRule CRD defines for a group and for a rule.
GROUP_FIELDS = {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset"}
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout"}
# The CRD's pattern for a Prometheus duration.
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")

Manifest = dict[str, Any]
Render = Callable[[str], list[Manifest]]


def the_one(manifests: list[Manifest], kind: str) -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}"
    return matches[0]


@pytest.mark.parametrize("path", OPTIONAL)
def test_optional_objects_are_kvkit_s_and_live_in_its_namespace(
    kustomize: Render, path: str
) -> None:
    """Each optional kustomization renders objects in namespace kvkit, labelled as kvkit's."""
    manifests = kustomize(path)
    assert manifests
    for manifest in manifests:
        metadata = manifest["metadata"]
        assert metadata["namespace"] == "kvkit", metadata["name"]
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "kvkit", metadata["name"]
        assert metadata["labels"]["app.kubernetes.io/name"] == "kvkit", metadata["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_dashboard_configmap_passes_strict_schema_validation(
    kustomize: Render, tmp_path: Path, version: str
) -> None:
    """The ConfigMap is valid, with no unknown fields (the CRDs have no schema to check here)."""
    rendered = tmp_path / "dashboard.yaml"
    rendered.write_text(yaml.safe_dump_all(kustomize("optional/dashboard")))
    result = run_tool("kubernetes-validate", "--strict", "--quiet", "-k", version, str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap_holds_the_dashboard_file_for_the_sidecar(kustomize: Render) -> None:
    """Grafana's sidecar finds the ConfigMap by its label, under a name that never changes, and
    reads exactly monitoring/grafana/dashboards/kvkit.json from it."""
    configmap = the_one(kustomize("optional/dashboard"), "ConfigMap")
    assert configmap["metadata"]["name"] == "kvkit-dashboard"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"kvkit.json": DASHBOARD.read_text()}
    assert json.loads(configmap["data"]["kvkit.json"]) == json.loads(DASHBOARD.read_text())


def test_prometheusrule_groups_are_exactly_those_of_alerts_yml(kustomize: Render) -> None:
    """The cluster evaluates the same rules as compose and promtool: one source."""
    rule = the_one(kustomize("optional/prometheusrule"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_generated_copies_are_up_to_date() -> None:
    """`make rules` has been run since alerts.yml last changed."""
    result = run_tool(sys.executable, "scripts/k8s_monitoring.py", "--check")
    assert result.returncode == 0, result.stderr


def test_prometheusrule_has_the_structure_of_the_operators_crd(kustomize: Render) -> None:
    """Only fields the CRD defines, each rule an alert or a recording, durations it accepts."""
    rule = the_one(kustomize("optional/prometheusrule"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    for group in rule["spec"]["groups"]:
        assert set(group) <= GROUP_FIELDS, group["name"]
        for entry in group["rules"]:
            assert set(entry) <= RULE_FIELDS, entry
            assert ("alert" in entry) != ("record" in entry), entry
            assert isinstance(entry["expr"], str), entry
            assert DURATION.match(entry.get("for", "0")), entry
            for field in ("labels", "annotations"):
                values = entry.get(field, {}).values()
                assert all(isinstance(value, str) for value in values), entry


def test_servicemonitor_has_the_structure_of_the_operators_crd(kustomize: Render) -> None:
    """Only fields the CRD defines for the endpoints, and a label selector of strings."""
    monitor = the_one(kustomize("optional/servicemonitor"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= ENDPOINT_FIELDS, endpoint
        assert DURATION.match(endpoint.get("interval", "0")), endpoint
    assert all(isinstance(v, str) for v in monitor["spec"]["selector"]["matchLabels"].values())


def test_servicemonitor_and_prometheusrule_carry_one_release_label(kustomize: Render) -> None:
    """kube-prometheus-stack selects both by release: <Helm release>, one value for both."""
    for path, kind in (
        ("optional/servicemonitor", "ServiceMonitor"),
        ("optional/prometheusrule", "PrometheusRule"),
    ):
        labels = the_one(kustomize(path), kind)["metadata"]["labels"]
        assert labels["release"] == DEFAULT_RELEASE, kind


def test_a_kustomization_of_your_own_sets_another_release_label(tmp_path: Path) -> None:
    """The documented way to name another Helm release relabels both objects."""
    shutil.copytree(REPO / "k8s" / "optional", tmp_path / "optional")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../optional/servicemonitor", "../optional/prometheusrule"],
                "labels": [{"pairs": {"release": "monitoring"}}],
            }
        )
    )
    result = run_tool("kubectl", "kustomize", str(mine))
    assert result.returncode == 0, result.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(m["kind"] for m in manifests) == ["PrometheusRule", "ServiceMonitor"]
    assert {m["metadata"]["labels"]["release"] for m in manifests} == {"monitoring"}


@pytest.mark.parametrize("path", ["overlays/dev", "overlays/prod"])
def test_overlays_include_no_rules_or_dashboard(kustomize: Render, path: str) -> None:
    """Overlays apply on clusters without the Operator's CRDs or a Grafana sidecar."""
    manifests = kustomize(path)
    assert not [m for m in manifests if m["kind"] == "PrometheusRule"]
    assert not [m for m in manifests if "grafana_dashboard" in m["metadata"].get("labels", {})]
