"""A body nobody reads is never read: refusing or ignoring it closes the connection at once."""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server, ServerFactory
from tests.hostile.wire import TIMEOUT, encode_request

CHUNK = b"%x\r\n" % 65_536 + b" " * 65_536 + b"\r\n"


@pytest.fixture(scope="module")
def keyed(server_factory: ServerFactory) -> Server:
    return server_factory("postgres", KV_API_KEYS="unread-body-key-" + "3" * 20)


def _answer_then_eof(server: Server, method: str, target: str) -> tuple[int, str | None, bool]:
    """Send a chunked body's first 64 KiB and never the rest; the status, the Connection header,
    and whether the server then closed the connection instead of waiting for the rest."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        head = encode_request(
            method, target, [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        )
        sock.sendall(head + CHUNK)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        response.read()
        sock.settimeout(5)
        started = time.monotonic()
        try:
            closed = sock.recv(1) == b"" and time.monotonic() - started < 5
        except TimeoutError:
            closed = False
        return response.status, response.headers.get("connection"), closed


def test_an_unauthenticated_upload_is_refused_and_cut(keyed: Server) -> None:
    """A POST with no key is 401 after 64 KiB of its body, and the connection is closed rather
    than drained: the rest of a 50 MB upload is never read."""
    assert _answer_then_eof(keyed, "POST", "/v1/items") == (401, "close", True)


def test_a_body_sent_where_none_is_read_is_not_drained(keyed: Server) -> None:
    """A body sent to /healthz is not read: 200, and the connection is closed, not drained."""
    assert _answer_then_eof(keyed, "GET", "/healthz") == (200, "close", True)
