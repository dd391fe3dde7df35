"""Errors classified right: TLS failures, the caller's own mistakes, each transport failure
by type, and the response every error carries."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pytest

from kvclient import (
    AsyncKVClient,
    ConnectError,
    ConnectionLost,
    InvalidArgument,
    KVClient,
    KVError,
    NotFound,
    ReadTimeout,
    RetryPolicy,
    ServiceUnavailable,
    TLSError,
    TransportError,
    UnsupportedType,
    UsageError,
)

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient, UntrustedTLSServer


def test_untrusted_certificate_fails_at_once_as_tls_error(
    make_client: MakeClient, tls_server: UntrustedTLSServer
) -> None:
    """A self-signed certificate the client does not trust raises TLSError after one handshake,
    never retried."""
    client = make_client(base_url=tls_server.url, retry=RetryPolicy(max_attempts=5))
    with pytest.raises(TLSError) as caught:
        client.get("k")
    assert tls_server.handshakes == 1
    assert caught.value.gave_up_reason is None
    assert "certificate" in str(caught.value).lower()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, InvalidArgument),
        (math.inf, InvalidArgument),
        ({"n": -math.inf}, InvalidArgument),
        ({1, 2}, UnsupportedType),
        (object(), UnsupportedType),
        (b"bytes", UnsupportedType),
    ],
    ids=["nan", "inf", "nested-inf", "set", "object", "bytes"],
)
def test_values_json_cannot_carry_are_refused_before_sending(
    client: Any, server: FaultServer, value: Any, expected: type[UsageError]
) -> None:
    """NaN, Infinity and non-JSON types raise the client's ValueError/TypeError, sending nothing."""
    with pytest.raises(expected) as caught:
        client.create("k", value)
    assert isinstance(caught.value, KVError)
    assert isinstance(caught.value, ValueError if expected is InvalidArgument else TypeError)
    assert not isinstance(caught.value, TransportError)
    assert server.requests == []


@pytest.mark.parametrize("base_url", ["127.0.0.1:8000", "localhost", "ftp://host", "http://"])
@pytest.mark.parametrize("client_class", [KVClient, AsyncKVClient])
def test_base_url_without_scheme_or_host_is_refused(base_url: str, client_class: Any) -> None:
    """A base URL that is not absolute http(s) raises InvalidArgument when the client is built."""
    with pytest.raises(InvalidArgument, match="base_url"):
        client_class(base_url)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: c.get(""), InvalidArgument),
        (lambda c: c.get(42), UnsupportedType),
        (lambda c: c.list(limit=0), InvalidArgument),
        (lambda c: c.update("k", 1, if_version="3"), UnsupportedType),
        (lambda c: c.get("k", timeout=-1), InvalidArgument),
    ],
    ids=["empty-key", "int-key", "zero-limit", "str-version", "negative-timeout"],
)
def test_bad_arguments_raise_usage_errors_before_sending(
    client: Any, server: FaultServer, call: Any, expected: type[UsageError]
) -> None:
    """Malformed arguments are the caller's mistake: a UsageError, and nothing on the wire."""
    with pytest.raises(expected):
        call(client)
    assert server.requests == []


def test_refused_connection_is_a_connect_error(refused_url: str, make_client: MakeClient) -> None:
    """Nobody listening: ConnectError, the type that says the request was never sent."""
    client = make_client(base_url=refused_url, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ConnectError):
        client.get("k")


def test_stalled_answer_is_a_read_timeout(make_client: MakeClient, server: FaultServer) -> None:
    """A server that took the request and did not answer in time: ReadTimeout."""
    client = make_client(timeout=(1.0, 0.2), retry=RetryPolicy(max_attempts=1))
    server.stall(3.0)
    with pytest.raises(ReadTimeout):
        client.get("k")


def test_dropped_connection_is_connection_lost(
    make_client: MakeClient, server: FaultServer
) -> None:
    """A server that hung up after reading the request: ConnectionLost, neither of the others."""
    client = make_client(retry=RetryPolicy(max_attempts=1))
    server.drop()
    with pytest.raises(ConnectionLost) as caught:
        client.get("k")
    assert not isinstance(caught.value, ConnectError | ReadTimeout)


def test_truncated_body_is_connection_lost(make_client: MakeClient, server: FaultServer) -> None:
    """A response cut short of its Content-Length is a lost connection, not a bad body."""
    client = make_client(retry=RetryPolicy(max_attempts=1))

    def truncate(handler: Any, request: Any) -> None:
        handler.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"key"')
        handler.close_connection = True

    server._add(truncate, 1)
    with pytest.raises(ConnectionLost):
        client.get("k")


def test_error_carries_status_headers_body_and_request_id(client: Any, server: FaultServer) -> None:
    """An API error exposes the response: status, headers, raw body and the request id."""
    server.problem(404, "not_found", headers={"X-Extra": "yes"})
    with pytest.raises(NotFound) as caught:
        client.get("k")
    error = caught.value
    assert error.status == 404 == error.response.status
    assert error.headers["x-extra"] == "yes"
    assert json.loads(error.body)["code"] == "not_found"
    assert error.request_id == server.requests[0].headers.get("X-Request-ID")


def test_error_after_retries_carries_the_last_response(
    make_client: MakeClient, server: FaultServer
) -> None:
    """The error raised when retries stop carries the last response's Retry-After header."""
    client = make_client(retry=RetryPolicy(max_attempts=2))
    server.problem(503, "service_unavailable", headers={"Retry-After": "1"}, times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert caught.value.headers["Retry-After"] == "1"
    assert caught.value.attempts == 2
