"""Strict JSON request bodies: bad bytes become clear 4xx answers before any database work."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.api.problems import ProblemError

M = TypeVar("M", bound=BaseModel)

# An escaped NUL that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


async def read_json(request: Request, model: type[M]) -> M:
    """Parse and validate the body as `model` (415 wrong type, 400 bad JSON, 422 bad shape)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    raw = await request.body()
    try:
        # orjson refuses invalid UTF-8, NaN, >64-bit integers and nesting deeper than 1024.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(400, "bad_request", f"body is not valid JSON: {exc.msg}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        raise ProblemError(
            422,
            "validation_error",
            f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}",
            errors=errors,
        ) from exc


def encode_value(value: Any, max_bytes: int) -> bytes:
    """The value's canonical JSON; 413 when too large, 422 when it holds a NUL character."""
    encoded = orjson.dumps(value)
    if len(encoded) > max_bytes:
        raise ProblemError(
            413,
            "payload_too_large",
            f"value is {len(encoded)} bytes encoded; the limit is {max_bytes}",
        )
    if _NUL_ESCAPE.search(encoded):
        raise ProblemError(422, "validation_error", "value: NUL characters are not allowed")
    return encoded
