"""gunicorn's SIGTERM with KV_SHUTDOWN_DRAIN_SECONDS: still serving, but out of rotation.

One replica, spoken to directly, so each promise of the drain is checked on its own: the
rolling restart (test_rolling_restart.py) only fails when a race is lost, these fail every time
without the drain (the listener closes and kept-alive connections are dropped at SIGTERM).
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from urllib.parse import urlparse

import pytest

from tests.conftest import Server, ServerFactory

DRAIN = 3.0


def connect(server: Server) -> http.client.HTTPConnection:
    url = urlparse(server.url)
    assert url.hostname is not None and url.port is not None
    return http.client.HTTPConnection(url.hostname, url.port, timeout=5)


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture
def server(server_factory: ServerFactory) -> Server:
    return server_factory(workers=2, KV_SHUTDOWN_DRAIN_SECONDS=str(DRAIN))


def test_sigterm_drains_before_the_listener_closes(server: Server) -> None:
    """After SIGTERM, a kept-alive connection gets its answer with Connection: close, a new
    connection is still accepted with /readyz 503, and only after the drain does gunicorn exit."""
    kept = connect(server)
    assert get(kept, "/readyz")[0] == 200
    assert get(kept, "/healthz")[0] == 200  # the connection is kept alive
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)

    status, headers, _ = get(kept, "/v1/items?limit=1")
    assert status == 200
    assert headers["connection"] == "close"
    kept.close()
    fresh = connect(server)
    status, headers, body = get(fresh, "/readyz")
    fresh.close()
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "database": "up", "shutdown": "draining"}
    assert headers["connection"] == "close"

    assert server.process.wait(DRAIN + 20) == 0
    assert time.monotonic() - signalled >= DRAIN


def test_second_sigterm_ends_the_drain(server_factory: ServerFactory) -> None:
    """A second SIGTERM stops at once, as gunicorn's own SIGTERM does, without waiting out the
    drain."""
    server = server_factory(workers=2, KV_SHUTDOWN_DRAIN_SECONDS="120")
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
