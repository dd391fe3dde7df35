"""Compose's purge service run as compose runs it: its command and environment, real PostgreSQL."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time

from tests.conftest import Databases, free_port, service_env
from tests.deploy import compose


def test_purge_service_purges_then_keeps_running(databases: Databases, redis_url: str) -> None:
    """The purge service's command purges at once and stays up for the next round, instead of
    exiting (which `restart: unless-stopped` would turn into a purge loop)."""
    purge = compose.resolved_services(compose.filled_in_example())["purge"]
    env = compose.on_this_machine(
        compose.environment(purge),
        database_url=databases.url("postgres"),
        redis_url=redis_url,
        otlp_endpoint=f"http://127.0.0.1:{free_port()}",
        metrics_port=free_port(),
    )
    command = purge["command"]
    assert command[0] == "python"
    with subprocess.Popen(
        [sys.executable, *command[1:]],
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            output = read_until(process, "deleted", timeout=60)
            assert "deleted" in output, output
            time.sleep(2)
            assert process.poll() is None, f"exited with {process.returncode}:\n{output}"
        finally:
            process.terminate()
            process.wait(10)


def read_until(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    """The process's output up to the line holding `text`, or all it wrote before it exited or
    `timeout` passed."""
    output = ""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while text not in output and time.monotonic() < deadline:
            if selector.select(timeout=1) and (line := process.stdout.readline()):
                output += line
            elif process.poll() is not None:
                break
    return output
