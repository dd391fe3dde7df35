#!/usr/bin/env python3
"""Write k8s/optional's PrometheusRule from kvkit's alert rules.

kustomize cannot wrap a file's content into a custom resource's spec, so
k8s/optional/prometheusrule holds a copy generated from monitoring/prometheus/alerts.yml. Run
`make rules` after changing the rules; `--check` only reports a stale copy (the tests and
scripts/lint-deploy.sh run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = REPO / "k8s" / "optional" / "prometheusrule" / "prometheusrule.yaml"
HEADER = (
    "# Generated from monitoring/prometheus/alerts.yml by `make rules`: edit that file, not"
    " this one.\n"
)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks, so the copy reads like the source."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_Dumper.add_representer(str, _represent_str)


def prometheus_rule(alerts: str) -> str:
    """The PrometheusRule whose spec.groups are exactly the groups of the alerts.yml text."""
    manifest: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kvkit", "labels": {"app.kubernetes.io/name": "kvkit"}},
        "spec": {"groups": yaml.safe_load(alerts)["groups"]},
    }
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)


def copies() -> dict[Path, bytes]:
    """Each generated file and the bytes it must hold."""
    return {
        PROMETHEUS_RULE: prometheus_rule(ALERTS.read_text()).encode(),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the copies, or with --check exit 1 naming those that differ from their source."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    args = parser.parse_args(argv)
    stale = [
        path for path, data in copies().items() if not path.exists() or path.read_bytes() != data
    ]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)} is out of date: run `make rules`", file=sys.stderr)
        return 1 if stale else 0
    for path, data in copies().items():
        path.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
