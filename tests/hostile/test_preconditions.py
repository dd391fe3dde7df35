"""Hostile If-Match and Idempotency-Key headers: 400 problems that change nothing."""

from __future__ import annotations

import json

import pytest

from tests.hostile.wire import Wire

JSON = [("Content-Type", "application/json")]


def _create(wire: Wire, key: str) -> None:
    body = json.dumps({"key": key, "value": "v1"}).encode()
    assert wire.request("POST", "/v1/items", JSON, body).status == 201


def _version(wire: Wire, key: str) -> int:
    return int(json.loads(wire.request("GET", f"/v1/items/{key}").body)["version"])


@pytest.mark.parametrize(
    "if_match",
    [
        b'"9223372036854775808"',  # one past the largest BIGINT
        b'"99999999999999999999999999999"',
        b'"\xb2"',  # a superscript two: str.isdigit() says yes, int() says no
        '"\u0661"'.encode(),  # an Arabic-Indic digit, as UTF-8 bytes
        b'"-1"',
        b'"1", "2"',
        b'W/"1"',
        b'"' + b"1" * 10_000 + b'"',
    ],
    ids=[
        "bigint-overflow",
        "huge",
        "superscript",
        "arabic-digit",
        "negative",
        "list",
        "weak",
        "10kb",
    ],
)
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_malformed_if_match_is_400_on_an_existing_item(
    wire: Wire, keyspace: str, if_match: bytes, method: str
) -> None:
    """An If-Match that is not one version this service could issue is 400; nothing changes."""
    key = keyspace + "im"
    _create(wire, key)
    body = b'{"value": "v2"}' if method == "PUT" else None
    headers = [*JSON, ("If-Match", if_match)] if body else [("If-Match", if_match)]
    wire.request(method, f"/v1/items/{key}", headers, body).problem(400, "bad_request")
    assert _version(wire, key) == 1


def test_largest_version_is_a_clean_412(wire: Wire, keyspace: str) -> None:
    """The largest BIGINT as If-Match is well-formed, merely stale: 412 with the current ETag."""
    key = keyspace + "max"
    _create(wire, key)
    headers = [*JSON, ("If-Match", '"9223372036854775807"')]
    response = wire.request("PUT", f"/v1/items/{key}", headers, b'{"value": 2}')
    response.problem(412, "version_mismatch")
    assert response.header("etag") == '"1"'


@pytest.mark.parametrize(
    "idempotency_key",
    [b"k" * 10_240, b"k" * 256, b"a\tb", b"a b", b"caf\xc3\xa9", b"\xff"],
    ids=["10kb", "256", "tab", "space", "non-ascii", "latin1-byte"],
)
def test_malformed_idempotency_key_is_400(
    pg_wire: Wire, keyspace: str, idempotency_key: bytes
) -> None:
    """An Idempotency-Key that is not 1..255 visible ASCII characters is 400 and creates nothing."""
    key = keyspace + "idem"
    body = json.dumps({"key": key, "value": 1}).encode()
    headers = [*JSON, ("Idempotency-Key", idempotency_key)]
    pg_wire.request("POST", "/v1/items", headers, body).problem(400, "bad_request")
    pg_wire.request("GET", f"/v1/items/{key}").problem(404, "not_found")


def test_longest_idempotency_key_is_accepted(pg_wire: Wire, keyspace: str) -> None:
    """255 visible ASCII characters are a valid Idempotency-Key."""
    body = json.dumps({"key": keyspace + "long", "value": 1}).encode()
    headers = [*JSON, ("Idempotency-Key", keyspace + "!" * (255 - len(keyspace)))]
    assert pg_wire.request("POST", "/v1/items", headers, body).status == 201


@pytest.mark.parametrize(
    "control", [b"\x00", b"\x01", b"\x1b", b"\x7f"], ids=["nul", "soh", "esc", "del"]
)
def test_idempotency_key_with_control_characters_is_refused_by_the_parser(
    pg_wire: Wire, control: bytes
) -> None:
    """Control characters in a header never reach the app: the parser answers its plain 400."""
    headers = [*JSON, ("Idempotency-Key", b"a" + control + b"b")]
    pg_wire.request("POST", "/v1/items", headers, b'{"key": "c", "value": 1}').parser_refusal()
