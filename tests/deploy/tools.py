"""Finding and running the external tools the deployment and monitoring tests check with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
