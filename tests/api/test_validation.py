"""Bad input gets a clear problem+json answer and changes nothing."""

from __future__ import annotations

import httpx
import pytest

PROBLEM = "application/problem+json"


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "code", "request_id"}
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    "key", ["has space", "slash/inside", "x" * 256, "ümlaut", "semi;colon", "nul\x00"]
)
def test_invalid_keys_are_422(api: httpx.Client, key: str) -> None:
    """Keys outside [A-Za-z0-9._~:@-]{1,255} are refused with 422 validation_error."""
    _assert_problem(api.post("/v1/items", json={"key": key, "value": 1}), 422, "validation_error")


def test_validation_problem_lists_errors(api: httpx.Client) -> None:
    """A 422 carries an `errors` list naming the field; never FastAPI's {"detail": [...]}."""
    body = _assert_problem(api.post("/v1/items", json={"value": 1}), 422, "validation_error")
    assert "detail" in body and isinstance(body["detail"], str)
    errors = body["errors"]
    assert isinstance(errors, list) and errors[0]["loc"] == ["body", "key"]


def test_unknown_fields_are_refused(api: httpx.Client, keyspace: str) -> None:
    """Unexpected body fields are a 422, so typos do not pass silently."""
    response = api.post("/v1/items", json={"key": keyspace + "x", "value": 1, "vaule": 2})
    _assert_problem(response, 422, "validation_error")
    assert api.get(f"/v1/items/{keyspace}x").status_code == 404


def test_value_over_the_limit_is_413(api: httpx.Client, keyspace: str) -> None:
    """A value whose JSON encoding exceeds KV_MAX_VALUE_BYTES is 413 and nothing is stored."""
    response = api.post("/v1/items", json={"key": keyspace + "big", "value": "x" * 70_000})
    _assert_problem(response, 413, "payload_too_large")
    assert api.get(f"/v1/items/{keyspace}big").status_code == 404


def test_oversized_body_is_refused_before_reading(api: httpx.Client) -> None:
    """A body over the hard cap is 413 from its Content-Length alone."""
    response = api.post(
        "/v1/items",
        content=b"{" + b" " * 2_000_000 + b"}",
        headers={"content-type": "application/json"},
    )
    _assert_problem(response, 413, "payload_too_large")


def test_malformed_json_is_400(api: httpx.Client) -> None:
    """Invalid JSON is 400 bad_request, not a 500."""
    response = api.post(
        "/v1/items", content=b'{"key": "a", "value": ', headers={"content-type": "application/json"}
    )
    _assert_problem(response, 400, "bad_request")


def test_wrong_content_type_is_415(api: httpx.Client) -> None:
    """A non-JSON Content-Type is 415 unsupported_media_type."""
    response = api.post(
        "/v1/items",
        content=b"key=a&value=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    _assert_problem(response, 415, "unsupported_media_type")


def test_nul_in_value_is_refused_before_the_database(api: httpx.Client, keyspace: str) -> None:
    """A NUL character inside a value is 422 on every backend (PostgreSQL cannot store it)."""
    response = api.post("/v1/items", json={"key": keyspace + "n", "value": {"a\x00": "b"}})
    _assert_problem(response, 422, "validation_error")


def test_literal_backslash_u0000_text_is_accepted(api: httpx.Client, keyspace: str) -> None:
    """The six characters \\u0000 in a string are ordinary text, not a NUL."""
    response = api.post("/v1/items", json={"key": keyspace + "t", "value": "\\u0000"})
    assert response.status_code == 201
    assert api.get(f"/v1/items/{keyspace}t").json()["value"] == "\\u0000"


def test_unknown_route_is_404_problem(api: httpx.Client) -> None:
    """The router's own 404 is a problem document too."""
    _assert_problem(api.get("/no/such/path"), 404, "not_found")


def test_unsupported_method_is_405_problem(api: httpx.Client) -> None:
    """The router's own 405 is a problem document with an Allow header."""
    response = api.request("PATCH", "/v1/items/abc")
    _assert_problem(response, 405, "method_not_allowed")
    assert "allow" in response.headers


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "cursor=%%%", "cursor=abc"])
def test_bad_list_parameters_are_422(api: httpx.Client, query: str) -> None:
    """A limit outside 1..1000 or a cursor this service did not issue is 422."""
    _assert_problem(api.get(f"/v1/items?{query}"), 422, "validation_error")


@pytest.mark.parametrize("if_match", ['W/"1"', "1", '"x"', ""])
def test_malformed_if_match_is_400(api: httpx.Client, keyspace: str, if_match: str) -> None:
    """If-Match must be a strong version ETag or *; anything else is 400 and changes nothing."""
    key = keyspace + "m"
    api.post("/v1/items", json={"key": key, "value": 1})
    response = api.put(f"/v1/items/{key}", json={"value": 2}, headers={"If-Match": if_match})
    _assert_problem(response, 400, "bad_request")
    assert api.get(f"/v1/items/{key}").json()["version"] == 1


def test_request_id_is_echoed(api: httpx.Client) -> None:
    """A sane X-Request-ID from the client comes back unchanged, in header and problem body."""
    response = api.get("/v1/items/none-such", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


def test_request_id_is_generated_when_absent_or_unsafe(api: httpx.Client) -> None:
    """Without a usable X-Request-ID the service mints a fresh one per request."""
    first = api.get("/healthz").headers["x-request-id"]
    second = api.get("/healthz", headers={"X-Request-ID": "bad id\twith space"})
    assert first and second.headers["x-request-id"] not in ("", first, "bad id\twith space")
