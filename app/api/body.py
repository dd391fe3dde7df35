"""Strict JSON request bodies: bad bytes become clear 4xx answers before any database work."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from app import jsontext
from app.api.problems import ProblemError, validation_error

M = TypeVar("M", bound=BaseModel)

# An escaped NUL that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# Arrays and objects nest at most this deep in a value: the limit every version has kept (once
# MariaDB's JSON column's), so a value stored before is still accepted back.
MAX_VALUE_DEPTH = 31


async def read_json(request: Request, model: type[M]) -> M:
    """Parse and validate the body as `model` (415 wrong type, 400 bad JSON, 422 bad shape)."""
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    if _charset(parameters) not in (None, "utf-8", "utf8"):
        # JSON is UTF-8 (RFC 8259 8.1): a body declared otherwise would be read as something else.
        raise ProblemError(415, "unsupported_media_type", "JSON bodies must be UTF-8")
    raw = await request.body()
    try:
        # Refuses invalid UTF-8, NaN, numbers beyond a double's range and lone surrogates;
        # integers stay exact whatever their size (app/jsontext.py).
        data = jsontext.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProblemError(400, "bad_request", f"body is not valid JSON: {exc.msg}") from exc
    except jsontext.IntegerTooLong as exc:
        raise ProblemError(422, "validation_error", f"value: {exc}") from exc
    except jsontext.NestedTooDeep as exc:
        raise _too_deep() from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def _too_deep() -> ProblemError:
    return ProblemError(
        422,
        "validation_error",
        f"value: arrays and objects nest deeper than {MAX_VALUE_DEPTH} levels",
    )


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def encode_value(value: Any, max_bytes: int) -> str:
    """The value's JSON text, as stored; 413 when too large, 422 when too deep or holding a NUL."""
    too_deep = _too_deep()
    try:
        encoded = jsontext.dumps(value)
    except TypeError as exc:  # only nesting past orjson's own limit (254) gets here
        raise too_deep from exc
    if len(encoded) > max_bytes:
        raise ProblemError(
            413,
            "payload_too_large",
            f"value is {len(encoded)} bytes encoded; the limit is {max_bytes}",
        )
    # Walked only now, so the walk is bounded by max_bytes.
    if _depth_exceeds(value, MAX_VALUE_DEPTH):
        raise too_deep
    text = encoded.decode()
    if _NUL_ESCAPE.search(text):
        raise ProblemError(422, "validation_error", "value: NUL characters are not allowed")
    return text


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep (without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False
