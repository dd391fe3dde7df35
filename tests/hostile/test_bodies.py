"""Hostile request bodies: a clear 4xx problem, never a 500, a hang or a dead process."""

from __future__ import annotations

import json

import pytest

from tests.hostile.wire import TIMEOUT, Wire, chunked, encode_request

JSON = [("Content-Type", "application/json")]
TEN_MB = 10 * 1024 * 1024


def _create(wire: Wire, body: bytes, headers: list[tuple[str, str]] = JSON) -> dict[str, object]:
    response = wire.request("POST", "/v1/items", headers, body)
    assert response.status == 201, response.body
    return dict(json.loads(response.body))


def _read(wire: Wire, key: str) -> object:
    response = wire.request("GET", f"/v1/items/{key}")
    assert response.status == 200, response.body
    return json.loads(response.body)["value"]


def _listed(wire: Wire, key: str) -> object:
    response = wire.request("GET", f"/v1/items?prefix={key}&limit=1")
    assert response.status == 200, response.body
    (item,) = json.loads(response.body)["items"]
    return item["value"]


@pytest.mark.parametrize(
    "body",
    [b'{"key": "a", "value": ', b"", b"{'key': 'a', 'value': 1}", b'{"key": "a", "value": NaN}'],
    ids=["truncated", "empty", "single-quotes", "nan"],
)
def test_invalid_json_is_400(wire: Wire, body: bytes) -> None:
    """A body that is not JSON is 400 bad_request."""
    wire.request("POST", "/v1/items", JSON, body).problem(400, "bad_request")


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"null", b"1e5", b"{}"])
def test_json_that_is_not_an_item_object_is_422(pg_wire: Wire, body: bytes) -> None:
    """Valid JSON of the wrong shape is 422 validation_error, never a 500."""
    pg_wire.request("POST", "/v1/items", JSON, body).problem(422, "validation_error")


@pytest.mark.parametrize(
    "headers",
    [[], [("Content-Type", "text/plain")], [("Content-Type", "application/jsonx")]],
    ids=["missing", "text-plain", "lookalike"],
)
def test_wrong_or_missing_content_type_is_415(
    pg_wire: Wire, headers: list[tuple[str, str]]
) -> None:
    """A JSON body without a JSON Content-Type is 415 unsupported_media_type."""
    body = b'{"key": "ct", "value": 1}'
    pg_wire.request("PUT", "/v1/items/ct", headers, body).problem(415, "unsupported_media_type")


def test_ten_megabytes_declared_are_refused_before_any_byte_is_read(pg_wire: Wire) -> None:
    """A Content-Length of 10 MB is 413 at once, without the server waiting for the body."""
    head = encode_request("POST", "/v1/items", [*JSON, ("Content-Length", str(TEN_MB))])
    response = pg_wire.send(head)
    response.problem(413, "payload_too_large")
    assert response.elapsed < TIMEOUT / 3


def test_ten_megabytes_with_content_length_are_refused(pg_wire: Wire) -> None:
    """A 10 MB body sent whole with its Content-Length is 413, not a hang."""
    head = encode_request("POST", "/v1/items", [*JSON, ("Content-Length", str(TEN_MB))])
    pg_wire.send(head, (b" " * 65_536 for _ in range(TEN_MB // 65_536))).problem(
        413, "payload_too_large"
    )


def test_ten_megabytes_chunked_are_refused(pg_wire: Wire) -> None:
    """A 10 MB chunked body without Content-Length is 413 once it passes the cap."""
    head = encode_request("POST", "/v1/items", [*JSON, ("Transfer-Encoding", "chunked")])
    pg_wire.send(head, chunked(TEN_MB)).problem(413, "payload_too_large")


def test_chunked_body_is_refused_before_it_ends(pg_wire: Wire) -> None:
    """A chunked upload that never ends is 413 as soon as it passes the cap, not read to its end."""
    head = encode_request("PUT", "/v1/items/up", [*JSON, ("Transfer-Encoding", "chunked")])
    response = pg_wire.send(head, chunked(2 * 1024 * 1024, finish=False))
    response.problem(413, "payload_too_large")
    assert response.elapsed < TIMEOUT / 3


def test_json_nested_100000_deep_is_400(pg_wire: Wire) -> None:
    """JSON nested 100,000 deep is refused by the parser's depth limit, without a crash."""
    body = b'{"key": "deep", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    pg_wire.request("POST", "/v1/items", JSON, body).problem(400, "bad_request")


def test_value_nested_31_deep_round_trips(wire: Wire, keyspace: str) -> None:
    """A value nested 31 levels deep (the most every backend stores) is stored, read and listed."""
    key = keyspace + "d31"
    value = json.loads("[" * 30 + "{}" + "]" * 30)
    _create(wire, json.dumps({"key": key, "value": value}).encode())
    assert _read(wire, key) == value
    assert _listed(wire, key) == value


@pytest.mark.parametrize("depth", [32, 254, 1000])
@pytest.mark.parametrize("exact", [False, True], ids=["fast-parser", "exact-parser"])
def test_value_nested_deeper_than_31_is_422(
    wire: Wire, keyspace: str, depth: int, exact: bool
) -> None:
    """Past 31 levels a value is 422 on every backend, whichever parser reads the body (a key
    holding "e123" looks like a three-digit exponent and takes the exact one); nothing is stored."""
    key = keyspace + f"d{depth}" + ("e123" if exact else "")
    body = b'{"key": "%s", "value": %s}' % (key.encode(), b"[" * depth + b"]" * depth)
    wire.request("POST", "/v1/items", JSON, body).problem(422, "validation_error")
    wire.request("GET", f"/v1/items/{key}").problem(404, "not_found")


@pytest.mark.parametrize(
    "literal",
    [b"1e400", b"-1e400", b"1.5e309", b"1e-400", b"-2.5E-999", b"0." + b"0" * 400 + b"1"],
    ids=["1e400", "-1e400", "1.5e309", "1e-400", "-2.5E-999", "400-zeros-then-1"],
)
def test_numbers_beyond_double_range_are_400(wire: Wire, keyspace: str, literal: bytes) -> None:
    """A number a double cannot hold is 400 both ways: too large (not infinity) and too small
    (not silently 0); nothing is stored."""
    key = keyspace + "range"
    body = b'{"key": "%s", "value": %s}' % (key.encode(), literal)
    detail = wire.request("POST", "/v1/items", JSON, body).problem(400, "bad_request")["detail"]
    assert "double" in detail
    wire.request("GET", f"/v1/items/{key}").problem(404, "not_found")


@pytest.mark.parametrize("literal", [b"0", b"0.0", b"-0.0", b"0e-500", b"0.000e+999"])
def test_zero_written_any_way_is_zero(wire: Wire, keyspace: str, literal: bytes) -> None:
    """Only a number that is not zero can be too small: zero itself is accepted however written."""
    key = keyspace + "zero"
    created = _create(wire, b'{"key": "%s", "value": %s}' % (key.encode(), literal))
    assert created["value"] == 0


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        (b'{"key": "%s", "key": "%s-other", "value": 1}', None),
        (b'{"key": "%s", "value": {"a": 1, "a": 2}}', None),
        (b'{"key": "%s", "value": [{"b": 1}, {"c": {"d": 1, "d": 1}}]}', None),
        (rb'{"key": "%s", "value": {"a": "\"a\": 1", "b": {"a": 1}}}', 1),
    ],
    ids=["key-twice", "nested", "deep", "names-inside-strings-are-not-members"],
)
def test_a_member_named_twice_is_400(wire: Wire, keyspace: str, body: bytes, kept: object) -> None:
    """I-JSON forbids duplicate names at any depth: 400, and nothing is created under either key."""
    key = keyspace + "dup"
    request = body.replace(b"%s", key.encode())
    if kept is not None:  # the look-alike is a plain string, not a second member
        assert wire.request("POST", "/v1/items", JSON, request).status == 201
        return
    wire.request("POST", "/v1/items", JSON, request).problem(400, "bad_request")
    wire.request("GET", f"/v1/items/{key}").problem(404, "not_found")
    wire.request("GET", f"/v1/items/{key}-other").problem(404, "not_found")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json;charset=latin-1",
        "application/json; charset=UTF-32",
    ],
)
def test_a_json_body_in_another_charset_is_415(pg_wire: Wire, content_type: str) -> None:
    """JSON is UTF-8: a body declared in another charset is 415, not read as UTF-8."""
    body = '{"key": "cs", "value": 1}'.encode("utf-16")
    headers = [("Content-Type", content_type)]
    pg_wire.request("POST", "/v1/items", headers, body).problem(415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", 'application/json; charset="UTF-8"']
)
def test_a_json_body_declared_utf8_is_read(pg_wire: Wire, keyspace: str, content_type: str) -> None:
    """charset=utf-8, however written, is what JSON is anyway."""
    body = b'{"key": "%s", "value": 1}' % (keyspace + "u8").encode()
    assert (
        pg_wire.request("POST", "/v1/items", [("Content-Type", content_type)], body).status == 201
    )


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        (b"1e20", 1e20),
        (b"-1.5e300", -1.5e300),
        (b"%d" % (2**64 - 1), 2**64 - 1),
        (b"%d" % -(2**63), -(2**63)),
        (b"-0", 0),
        (b"1e-320", 1e-320),
    ],
    ids=["1e20", "-1.5e300", "u64-max", "i64-min", "-0", "subnormal"],
)
def test_huge_and_tiny_numbers_read_back_as_written(
    wire: Wire, keyspace: str, literal: bytes, expected: float
) -> None:
    """A number reads back, alone and in a page, as the value its create answered with, of the
    same type (tests/api/test_values.py holds the exact cases)."""
    key = keyspace + "num"
    created = _create(wire, b'{"key": "%s", "value": %s}' % (key.encode(), literal))
    for value in (created["value"], _read(wire, key), _listed(wire, key)):
        assert (type(value), value) == (type(expected), expected)


@pytest.mark.parametrize(
    "body",
    [
        b'{"key": "utf", "value": "\xff\xfe"}',
        b'{"key": "utf", "value": "\xc0\xaf"}',
        b'{"key": "utf", "value": "\xed\xa0\x80"}',
        b'{"key": "utf", "value": "\\ud800"}',
        b'{"key": "utf", "value": ["\\ud800", 123456789012345678901234567890]}',
        b'{"key": "utf\xff", "value": 1}',
    ],
    ids=[
        "ff-fe",
        "overlong",
        "utf8-surrogate",
        "escaped-lone-surrogate",
        "lone-surrogate-beside-a-wide-integer",
        "in-key",
    ],
)
def test_invalid_utf8_is_400(pg_wire: Wire, body: bytes) -> None:
    """Bytes that are not UTF-8 (or escape a lone surrogate) are 400 bad_request."""
    pg_wire.request("POST", "/v1/items", JSON, body).problem(400, "bad_request")


@pytest.mark.parametrize(
    "value",
    [b'"a\\u0000b"', b'{"a\\u0000": 1}', b'["\\\\\\u0000"]'],
    ids=["in-string", "in-object-key", "after-escaped-backslash"],
)
def test_nul_in_value_is_422_before_the_database(wire: Wire, keyspace: str, value: bytes) -> None:
    """An escaped NUL anywhere in a value is 422 on every backend; PostgreSQL never sees it."""
    key = keyspace + "nul"
    body = b'{"key": "%s", "value": %s}' % (key.encode(), value)
    wire.request("POST", "/v1/items", JSON, body).problem(422, "validation_error")
    wire.request("GET", f"/v1/items/{key}").problem(404, "not_found")


def test_raw_control_character_in_json_string_is_400(pg_wire: Wire) -> None:
    """An unescaped NUL byte inside a JSON string is invalid JSON, so 400."""
    body = b'{"key": "raw", "value": "a\x00b"}'
    pg_wire.request("POST", "/v1/items", JSON, body).problem(400, "bad_request")


def test_nul_in_put_value_is_422(wire: Wire, keyspace: str) -> None:
    """An update carrying a NUL is 422 and leaves the stored value alone."""
    key = keyspace + "upd"
    _create(wire, json.dumps({"key": key, "value": "before"}).encode())
    body = b'{"value": "x\\u0000"}'
    wire.request("PUT", f"/v1/items/{key}", JSON, body).problem(422, "validation_error")
    assert _read(wire, key) == "before"
