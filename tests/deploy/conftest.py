"""Fixtures for the deployment tests: Kubernetes overlays rendered by kustomize."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.tools import run_tool

OVERLAYS = ("dev", "prod")

Manifests = list[dict[str, Any]]


@pytest.fixture(scope="session")
def kustomize() -> Callable[[str], Manifests]:
    """Render a kustomization under k8s/ (once per test run) into its list of manifests."""
    rendered: dict[str, Manifests] = {}

    def render(path: str) -> Manifests:
        if path not in rendered:
            result = run_tool("kubectl", "kustomize", f"k8s/{path}")
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
