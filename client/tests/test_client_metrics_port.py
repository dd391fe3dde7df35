"""kvclient's metrics on a standalone port, exactly as client/README.md shows it."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The README's standalone-port example, run as its own process: the default registry, one port.
APPLICATION = """
import sys
from prometheus_client import start_http_server
import kvclient

start_http_server(int(sys.argv[2]), addr="127.0.0.1")
with kvclient.KVClient(sys.argv[1]) as client:
    client.create("port.a", {"n": 1})
    client.get("port.a")
    try:
        client.get("port.missing")
    except kvclient.NotFound:
        pass
print("ready", flush=True)
sys.stdin.read()  # keep serving until the test closes stdin
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def requests_total(text: str) -> dict[tuple[str, str], float]:
    """kvclient_requests_total by (method, outcome) from an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kvclient_requests_total":
                found[sample.labels["method"], sample.labels["outcome"]] = sample.value
    return found


def test_standalone_port_exposes_the_calls_made(kvkit_service: Callable[..., Any]) -> None:
    """An application serving the default registry with start_http_server shows each call it
    made against a real kvkit in kvclient_requests_total on that port."""
    service = kvkit_service()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", APPLICATION, service.url, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read() if process.stderr else line
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:  # nosec B310  # loopback
            text = response.read().decode()
    finally:
        process.communicate(timeout=10)
    assert requests_total(text) == {
        ("POST", "success"): 1.0,
        ("GET", "success"): 1.0,
        ("GET", "http_error"): 1.0,
    }
