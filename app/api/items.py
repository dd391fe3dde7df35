"""/v1/items routes."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response

from app.api.body import encode_value, read_json
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import ProblemError
from app.api.schemas import (
    KEY_PATTERN,
    PREFIX_PATTERN,
    ItemCreate,
    ItemOut,
    ItemUpdate,
    PageOut,
    Problem,
)
from app.config import get_settings
from app.services import items as service
from app.store.items import ItemRecord

router = APIRouter(prefix="/v1/items", tags=["items"])

KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, min_length=1, max_length=255)]
IfMatch = Annotated[str | None, Header(description='Expected version as an ETag, e.g. "3", or *.')]


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    common = (400, 401, 422, 429, 500, 503)
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}}
        for status in sorted({*statuses, *common})
    }


def _body_schema(model: type[ItemCreate] | type[ItemUpdate]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _item_body(record: ItemRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "value": record.value,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _item_response(record: ItemRecord, status: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(_item_body(record), option=orjson.OPT_UTC_Z),
        status,
        headers={"ETag": f'"{record.version}"', **headers},
        media_type="application/json",
    )


def _expected_version(if_match: str | None) -> int | None:
    """Strong If-Match with one version, or *; None means unconditional."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip()
    if len(tag) >= 3 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
        return int(tag[1:-1])
    raise ProblemError(400, "bad_request", 'If-Match must be a version ETag such as "3", or *')


@router.post(
    "",
    status_code=201,
    response_model=ItemOut,
    responses=_problems(409, 413, 415),
    openapi_extra=_body_schema(ItemCreate),
)
async def create_item(request: Request) -> Response:
    """Create an item; 409 if the key exists."""
    body = await read_json(request, ItemCreate)
    encode_value(body.value, get_settings().max_value_bytes)
    record = await service.create_item(body.key, body.value)
    return _item_response(record, 201, Location=f"/v1/items/{record.key}")


@router.get("/{key}", response_model=ItemOut, responses=_problems(404))
async def read_item(key: KeyPath) -> Response:
    """Fetch one item by key."""
    return _item_response(await service.read_item(key))


@router.put(
    "/{key}",
    response_model=ItemOut,
    responses=_problems(404, 412, 413, 415),
    openapi_extra=_body_schema(ItemUpdate),
)
async def update_item(key: KeyPath, request: Request, if_match: IfMatch = None) -> Response:
    """Replace an item's value and bump its version; If-Match makes it conditional."""
    expected = _expected_version(if_match)
    body = await read_json(request, ItemUpdate)
    encode_value(body.value, get_settings().max_value_bytes)
    return _item_response(await service.update_item(key, body.value, expected))


@router.delete("/{key}", status_code=204, responses=_problems(404, 412))
async def delete_item(key: KeyPath, if_match: IfMatch = None) -> Response:
    """Delete an item; If-Match makes it conditional."""
    await service.delete_item(key, _expected_version(if_match))
    return Response(status_code=204)


@router.get("", response_model=PageOut, responses=_problems())
async def list_items(
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    prefix: Annotated[str | None, Query(pattern=PREFIX_PATTERN)] = None,
) -> Response:
    """A page of items in key order; follow `next_cursor` (or the Link header) for more."""
    after = decode_cursor(cursor) if cursor else None
    records = await service.list_items(limit + 1, after, prefix)
    page, more = records[:limit], len(records) > limit
    next_cursor = encode_cursor(page[-1].key) if more else None
    headers = {}
    if next_cursor:
        query = {"limit": limit, "cursor": next_cursor, **({"prefix": prefix} if prefix else {})}
        headers["Link"] = f'</v1/items?{urlencode(query)}>; rel="next"'
    body = {"items": [_item_body(r) for r in page], "next_cursor": next_cursor}
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z), headers=headers, media_type="application/json"
    )
