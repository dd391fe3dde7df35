"""Error responses map to typed exceptions, and only retryable ones are retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from kvclient import (
    APIError,
    KeyExists,
    KVError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    VersionMismatch,
)

if TYPE_CHECKING:
    from conftest import FaultServer


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "bad_request", ValidationError),
        (401, "unauthorized", Unauthorized),
        (404, "not_found", NotFound),
        (409, "key_exists", KeyExists),
        (412, "version_mismatch", VersionMismatch),
        (413, "payload_too_large", ValidationError),
        (422, "validation_error", ValidationError),
        (422, "idempotency_key_reused", ValidationError),
        (500, "internal_error", ServerError),
    ],
)
def test_non_retryable_errors_are_raised_after_one_request(
    client: Any, server: FaultServer, status: int, code: str, expected: type[APIError]
) -> None:
    """Plain 4xx and 500 answers are not retried and raise their type with status, code, id."""
    server.problem(status, code, times=None)
    with pytest.raises(expected) as caught:
        client.create("k", 1)
    assert len(server.requests) == 1
    error = caught.value
    assert (error.status, error.code) == (status, code)
    assert error.request_id == server.requests[0].headers.get("X-Request-ID")
    assert error.detail == f"{code} from the test server"
    assert error.gave_up_reason is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ValidationError),
        (401, Unauthorized),
        (403, APIError),
        (404, NotFound),
        (409, APIError),
        (412, VersionMismatch),
        (413, ValidationError),
        (422, ValidationError),
        (500, ServerError),
    ],
)
def test_status_decides_the_type_when_the_body_has_no_code(
    client: Any, server: FaultServer, status: int, expected: type[APIError]
) -> None:
    """A non-problem body (say, from a proxy) still maps by HTTP status."""
    server.respond(status, body=b"<html>nope</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(APIError) as caught:
        client.get("k")
    assert type(caught.value) is expected
    assert caught.value.code is None and caught.value.status == status


def test_unknown_code_falls_back_to_the_status(client: Any, server: FaultServer) -> None:
    """A code this client does not know maps by status rather than to a generic error."""
    server.problem(404, "item_vanished")
    with pytest.raises(NotFound) as caught:
        client.get("k")
    assert caught.value.code == "item_vanished"


def test_request_id_falls_back_to_the_response_header(client: Any, server: FaultServer) -> None:
    """Without a body request_id, the error carries the X-Request-ID response header."""
    server.respond(404, headers={"X-Request-ID": "from-header"})
    with pytest.raises(NotFound) as caught:
        client.get("k")
    assert caught.value.request_id == "from-header"
    assert "from-header" in str(caught.value)


def test_validation_errors_keep_the_field_errors(client: Any, server: FaultServer) -> None:
    """The `errors` list of a validation problem is exposed on the exception."""
    body = (
        b'{"status": 422, "code": "validation_error", "detail": "bad key",'
        b' "errors": [{"loc": ["body", "key"], "msg": "too long"}]}'
    )
    server.respond(422, body=body, headers={"Content-Type": "application/problem+json"})
    with pytest.raises(ValidationError) as caught:
        client.create("k" * 300, 1)
    assert caught.value.errors == [{"loc": ["body", "key"], "msg": "too long"}]
    assert caught.value.detail == "bad key"


def test_hierarchy_lets_callers_catch_broadly() -> None:
    """Every HTTP error is an APIError and a KVError; 503 is also a ServerError."""
    assert issubclass(ServiceUnavailable, ServerError)
    assert all(
        issubclass(cls, APIError) and issubclass(cls, KVError)
        for cls in (NotFound, KeyExists, VersionMismatch, RateLimited, Unauthorized)
    )


def test_malformed_success_body_raises_kverror(client: Any, server: FaultServer) -> None:
    """A 200 whose body is not an item raises KVError instead of a KeyError."""
    server.respond(200, body=b'{"unexpected": true}', headers={"Content-Type": "application/json"})
    with pytest.raises(KVError, match="unexpected 200 response"):
        client.get("k")
