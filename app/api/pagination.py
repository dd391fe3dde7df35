"""Opaque keyset cursors: the last key of a page, versioned and base64url-encoded."""

from __future__ import annotations

import base64
import binascii

from app.api.problems import validation_error
from app.api.schemas import KEY_RE

_VERSION = b"k1:"


def encode_cursor(last_key: str) -> str:
    return base64.urlsafe_b64encode(_VERSION + last_key.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    """The key the next page starts after; 422 for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = raw.removeprefix(_VERSION).decode() if raw.startswith(_VERSION) else ""
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not KEY_RE.fullmatch(key):  # match() would let "$" accept a trailing newline
        raise validation_error(
            [
                {
                    "loc": ("query", "cursor"),
                    "msg": "not a cursor issued by this service",
                    "type": "value_error",
                }
            ]
        )
    return key
