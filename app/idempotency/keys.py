"""What identifies a request for idempotency purposes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from app import jsontext

_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class MalformedIdempotencyKey(ValueError):
    """The header is not 1..255 visible ASCII characters."""


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    """The (client, key) scope of a request and the fingerprint of what it asks for."""

    client: str
    key: str
    fingerprint: str


def parse_idempotency_key(header: str | None) -> str | None:
    if header is None:
        return None
    if not _VALID_KEY.match(header):
        raise MalformedIdempotencyKey("Idempotency-Key must be 1..255 visible ASCII characters")
    return header


def fingerprint(method: str, path: str, body: Any, if_match: str | None) -> str:
    """Method, path, canonical JSON body (sorted keys) and precondition, hashed."""
    canonical = jsontext.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical, (if_match or "").encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
