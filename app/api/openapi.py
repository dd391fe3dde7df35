"""What the OpenAPI document says about the item routes beyond their signatures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path
from pydantic import BaseModel, WithJsonSchema

from app.api.schemas import KEY_PATTERN, Problem

KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, min_length=1, max_length=255)]
# The header rules are documented in the schema; the routes check them and answer 400.
IfMatch = Annotated[
    str | None,
    Header(description='Expected version as an ETag, e.g. "3", or *.'),
    WithJsonSchema({"type": "string", "pattern": r'^(\*|"[0-9]{1,19}")$'}),
]
IdempotencyKey = Annotated[
    str | None,
    Header(description="1..255 visible ASCII characters; retries with it never repeat the write."),
    WithJsonSchema({"type": "string", "pattern": "^[!-~]{1,255}$"}),
]

# Every route can answer these, whatever its own failures.
_COMMON_PROBLEMS = (400, 401, 413, 422, 429, 500, 503)  # 413: the body cap applies to all


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` documenting a route's problem+json answers."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}}
        for status in sorted({*statuses, *_COMMON_PROBLEMS})
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads its body itself (app/api/body.py)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
