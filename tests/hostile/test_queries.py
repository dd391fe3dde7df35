"""Query string abuse on GET /v1/items: a 422 problem, or the parser's 400 for absurd lengths."""

from __future__ import annotations

import json

import pytest

from tests.hostile.wire import Wire


@pytest.mark.parametrize(
    "query",
    [
        "limit=99999999999999999999999999",
        "limit=-1",
        "limit=0",
        "limit=1.5",
        "limit=1e3",
        "limit=",
        "limit=%ff",
        "limit=%00",
        "limit=0x10",
    ],
)
def test_bad_limit_is_422(pg_wire: Wire, query: str) -> None:
    """A limit that is not an integer in 1..1000 is 422 validation_error."""
    pg_wire.request("GET", f"/v1/items?{query}").problem(422, "validation_error")


@pytest.mark.parametrize(
    "query",
    ["limit=1&limit=1000", "cursor=azE6YQ&cursor=azE6Yg", "prefix=a&prefix=b", "limit=5&limit=5"],
)
def test_repeated_parameters_are_422(pg_wire: Wire, query: str) -> None:
    """A parameter given twice is 422: no guessing which one a proxy in front of us checked."""
    pg_wire.request("GET", f"/v1/items?{query}").problem(422, "validation_error")


@pytest.mark.parametrize(
    "query",
    [
        "prefix=" + "a" * 10_000,
        "cursor=" + "a" * 10_000,
        "prefix=%ff%fe",
        "prefix=%00",
        "prefix=a%0A",
        "prefix=%2e%2e%2f",
        "cursor=%ff%fe",
        "cursor=%00",
        "cursor=azE6YQo",  # a well-formed cursor whose key ends in a newline
        "cursor=" + "%E2%82%AC" * 100,
    ],
    ids=[
        "long-prefix",
        "long-cursor",
        "prefix-bad-utf8",
        "prefix-nul",
        "prefix-newline",
        "prefix-traversal",
        "cursor-bad-utf8",
        "cursor-nul",
        "cursor-newline-key",
        "cursor-non-ascii",
    ],
)
def test_bad_prefix_or_cursor_is_422(pg_wire: Wire, query: str) -> None:
    """A prefix outside the key alphabet or a cursor the service did not issue is 422."""
    pg_wire.request("GET", f"/v1/items?{query}").problem(422, "validation_error")


def test_unknown_parameters_with_invalid_utf8_are_ignored(pg_wire: Wire) -> None:
    """Parameters the route does not define are ignored, even when not UTF-8."""
    response = pg_wire.request("GET", "/v1/items?limit=1&%ff=%fe&x=%00")
    assert response.status == 200
    assert set(json.loads(response.body)) == {"items", "next_cursor"}


def test_query_over_the_parser_limit_is_refused(pg_wire: Wire) -> None:
    """A request line of 100 KB is the HTTP parser's plain 400, never a 500 or a hang."""
    pg_wire.request("GET", "/v1/items?prefix=" + "a" * 100_000).parser_refusal()
