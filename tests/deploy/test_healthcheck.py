"""`python -m app healthcheck`, the image's HEALTHCHECK: it asks /healthz wherever gunicorn was
told to listen (GUNICORN_BIND), not at a fixed 127.0.0.1:8000."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Databases, free_port, service_env, start_server

REPO = Path(__file__).resolve().parents[2]


def healthcheck(bind: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "app", "healthcheck"],
        env=service_env(GUNICORN_BIND=bind),
        capture_output=True,
        timeout=30,
    ).returncode


def wait_healthy(bind: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthcheck(bind) == 0:
            return True
        time.sleep(0.3)
    return False


@pytest.mark.parametrize("form", ["wildcard", "ipv6", "unix"])
def test_the_healthcheck_follows_the_bind(form: str, databases: Databases, tmp_path: Path) -> None:
    """gunicorn on a non-default port, on IPv6 loopback and on a unix socket: the probe passes
    with the server's own GUNICORN_BIND, and fails once the server is gone."""
    port = free_port()
    bind = {
        "wildcard": f"0.0.0.0:{port}",
        "ipv6": f"[::1]:{port}",
        "unix": f"unix:{tmp_path / 'kvkit.sock'}",
    }[form]
    command = [sys.executable, "-m", "gunicorn", "app.main:app"]
    env = service_env(
        DATABASE_URL=databases.url("sqlite"), GUNICORN_BIND=bind, GUNICORN_WORKERS="1"
    )
    server = start_server(tmp_path, env, command=command, port=port, cwd=REPO, wait=False)
    try:
        assert wait_healthy(bind), server.log()
        assert healthcheck(f"127.0.0.1:{free_port()}") == 1  # nothing listens there
    finally:
        server.stop()
    assert healthcheck(bind) == 1
