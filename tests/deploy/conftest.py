"""Fixtures for the deployment tests: Kubernetes overlays rendered by kustomize."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, run_tool

OVERLAYS = ("dev", "prod")

Manifests = list[dict[str, Any]]


def user_copy_of_k8s(destination: Path) -> Path:
    """k8s/ as a user has it after following the README: each overlay's secrets.env made from
    its example (prod's is never committed)."""
    tree = destination / "k8s"
    shutil.copytree(REPO / "k8s", tree)
    # k8s/optional/dashboard includes the kustomization beside the dashboard JSON.
    dashboards = Path("monitoring/grafana/dashboards")
    shutil.copytree(REPO / dashboards, destination / dashboards)
    for example in tree.glob("overlays/*/secrets.env.example"):
        target = example.with_suffix("")
        if not target.exists():
            shutil.copy(example, target)
    return tree


@pytest.fixture(scope="session")
def kustomize(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Manifests]:
    """Render a kustomization under k8s/ (once per test run) into its list of manifests."""
    tree = user_copy_of_k8s(tmp_path_factory.mktemp("kustomize"))
    rendered: dict[str, Manifests] = {}

    def render(path: str) -> Manifests:
        if path not in rendered:
            result = run_tool("kubectl", "kustomize", str(tree / path))
            assert result.returncode == 0, result.stderr
            rendered[path] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return rendered[path]

    return render


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Name of each overlay in turn."""
    return str(request.param)


@pytest.fixture
def manifests(kustomize: Callable[[str], Manifests], overlay: str) -> Manifests:
    """Rendered manifests of each overlay in turn."""
    return kustomize(f"overlays/{overlay}")
