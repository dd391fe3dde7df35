"""Fixtures for the deployment tests: external tools and rendered Kubernetes overlays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")

Manifest = dict[str, Any]


def find_tool(name: str) -> str:
    """Return the path of a command-line tool; skip when it is missing, fail instead on CI."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if os.access(beside_python, os.X_OK) else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (scripts/lint-deploy.sh installs the system tools)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root and capture its output."""
    return subprocess.run(
        [find_tool(name), *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def kustomize() -> Callable[[str], list[Manifest]]:
    """Render a kustomization under k8s/ (once per session) into its list of manifests."""
    rendered: dict[str, list[Manifest]] = {}

    def render(path: str) -> list[Manifest]:
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
def manifests(kustomize: Callable[[str], list[Manifest]], overlay: str) -> list[Manifest]:
    """Rendered manifests of each overlay in turn."""
    return kustomize(f"overlays/{overlay}")
