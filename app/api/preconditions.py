"""The request headers that shape a write: If-Match and Idempotency-Key."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from app.api.problems import ProblemError
from app.idempotency.keys import (
    IdempotencyRequest,
    MalformedIdempotencyKey,
    fingerprint,
    parse_idempotency_key,
)
from app.security.identity import identity_of

# Versions are BIGINT columns: a larger number was never issued, so it is malformed, not stale.
_VERSION_TAG = re.compile(r'"([0-9]{1,19})"')
_MAX_VERSION = 2**63 - 1


def expected_version(if_match: str | None) -> int | None:
    """Strong If-Match with one version, or *; None means unconditional."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = _VERSION_TAG.fullmatch(if_match.strip())
    if tag and int(tag[1]) <= _MAX_VERSION:
        return int(tag[1])
    raise ProblemError(400, "bad_request", 'If-Match must be a version ETag such as "3", or *')


def idempotency_request(
    request: Request, header: str | None, body: Any, if_match: str | None
) -> IdempotencyRequest | None:
    """The request's Idempotency-Key scope and fingerprint, or None without the header."""
    try:
        key = parse_idempotency_key(header)
    except MalformedIdempotencyKey as exc:
        raise ProblemError(400, "bad_request", str(exc)) from exc
    if key is None:
        return None
    identity = identity_of(request.scope)
    assert identity is not None, "GuardMiddleware identifies every /v1 request"
    return IdempotencyRequest(
        client=identity.id,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, body, if_match),
    )
