"""Hostile paths and headers: NUL bytes, traversal, encoded slashes, oversized headers."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server
from tests.hostile.wire import Wire

JSON = [("Content-Type", "application/json")]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("target", ["/v1/items/%00", "/v1/items/a%00b", "/v1/items/abc%0A"])
def test_control_characters_in_a_key_are_422(wire: Wire, method: str, target: str) -> None:
    """A key holding NUL or a newline is 422 on every backend, before the database."""
    body = b'{"value": 1}' if method == "PUT" else None
    wire.request(method, target, JSON if body else [], body).problem(422, "validation_error")


@pytest.mark.parametrize(
    "target",
    [
        "/v1/items/../../etc/passwd",
        "/v1/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/items/..%2f..%2fetc%2fpasswd",
        "/v1/items/a%2Fb",
        "/v1/items/a/b",
        "/v1/../healthz",
    ],
)
def test_traversal_and_encoded_slashes_are_404_problems(pg_wire: Wire, target: str) -> None:
    """Dot segments and encoded slashes never reach a file or another route: 404 problem."""
    pg_wire.request("GET", target).problem(404, "not_found")


@pytest.mark.parametrize("target", ["/v1/items/%ff", "/v1/items/%c3%bc", "/v1/items/a%20b"])
def test_percent_encoded_non_key_characters_are_422(pg_wire: Wire, target: str) -> None:
    """Percent-encoded bytes outside the key alphabet (invalid UTF-8 included) are 422."""
    pg_wire.request("GET", target).problem(422, "validation_error")


def test_hundred_kilobyte_header_value_is_answered_normally(pg_wire: Wire) -> None:
    """A 100 KB header value is neither a 500 nor a crash; the request is served."""
    response = pg_wire.request("GET", "/v1/items/none", [("X-Padding", "a" * 100_000)])
    response.problem(404, "not_found")


def test_ten_thousand_headers_are_answered_normally(pg_wire: Wire) -> None:
    """Ten thousand headers are neither a 500 nor a crash; the request is served."""
    headers = [(f"X-H{i}", "v") for i in range(10_000)]
    pg_wire.request("GET", "/v1/items/none", headers).problem(404, "not_found")


def test_huge_request_id_is_replaced_not_echoed(pg_wire: Wire) -> None:
    """A 100 KB X-Request-ID is not echoed back; the service mints its own."""
    response = pg_wire.request("GET", "/v1/items/none", [("X-Request-ID", "r" * 100_000)])
    body = response.problem(404, "not_found")
    assert len(body["request_id"]) <= 128


def test_header_with_control_character_is_refused_by_the_parser(pg_wire: Wire) -> None:
    """A header value holding a control character is the parser's plain 400, before the app."""
    pg_wire.request("GET", "/v1/items/none", [("X-Bad", b"a\x01b")]).parser_refusal()


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 1e3",
        b"Content-Length: -1",
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Content-Length: 4\r\nTransfer-Encoding: chunked",
    ],
    ids=["not-a-number", "negative", "two-lengths", "length-and-chunked"],
)
def test_ambiguous_body_framing_is_refused_by_the_parser(pg_wire: Wire, framing: bytes) -> None:
    """A body length that is invalid or given two ways (request smuggling) is the parser's 400."""
    head = b"POST /v1/items HTTP/1.1\r\nHost: kvkit\r\n" + framing + b"\r\n\r\n0\r\n\r\n"
    pg_wire.send(head).parser_refusal()


def test_unknown_path_is_a_problem_not_html(pg_wire: Wire) -> None:
    """An unknown path is a 404 problem document, never an HTML page."""
    response = pg_wire.request("GET", "/admin/../../../../etc/passwd", [("Accept", "text/html")])
    response.problem(404, "not_found")
    assert b"<" not in response.body


@pytest.mark.parametrize("path", ["/metrics/", "/healthz/", "/readyz/", "/v1/items/"])
def test_a_trailing_slash_is_not_found_never_a_redirect_to_the_callers_host(
    api_server: Server, path: str
) -> None:
    """A stray slash with a Host of the client's choosing is a 404 problem with no Location, not
    a redirect to that host."""
    response = httpx.get(
        api_server.url + path, headers={"Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_segments_are_refused_as_keys(wire: Wire, key: str) -> None:
    """ "." and ".." can never be read back through a URL client, so they are never accepted."""
    body = b'{"key": "%s", "value": 1}' % key.encode()
    wire.request("POST", "/v1/items", JSON, body).problem(422, "validation_error")
    wire.request("PUT", f"/v1/items/{key}", JSON, b'{"value": 1}').problem(422, "validation_error")


@pytest.mark.parametrize("key", ["...", ".a", "..a", "a."])
def test_keys_with_dots_that_are_not_dot_segments_are_fine(
    wire: Wire, keyspace: str, key: str
) -> None:
    """Only "." and ".." themselves are refused; other keys with dots round-trip."""
    full = keyspace + key if not key.startswith(".") else key + keyspace
    body = b'{"key": "%s", "value": 1}' % full.encode()
    created = wire.request("POST", "/v1/items", JSON, body)
    assert created.status == 201, created.body
    assert wire.request("GET", f"/v1/items/{full}").status == 200
