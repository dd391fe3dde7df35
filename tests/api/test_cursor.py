"""Cursor encoding."""

from __future__ import annotations

import pytest

from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import ProblemError


@pytest.mark.parametrize("key", ["a", "A.b-c~d:e@f", "x" * 255])
def test_cursor_round_trips(key: str) -> None:
    """A cursor decodes to the key it was made from and is URL-safe."""
    cursor = encode_cursor(key)
    assert decode_cursor(cursor) == key
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("cursor", ["", "!!!", "YQ", encode_cursor("a")[:-1] + "*"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    """Anything the service did not issue is a 422 problem."""
    with pytest.raises(ProblemError) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 422
