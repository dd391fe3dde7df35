"""/v1/items routes."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.body import encode_value, read_json
from app.api.openapi import IdempotencyKey, IfMatch, KeyPath, json_body, problems
from app.api.pagination import decode_cursor, encode_cursor
from app.api.preconditions import expected_version, idempotency_request
from app.api.problems import ProblemError, validation_error
from app.api.rendering import item_response, outcome_response, page_response
from app.api.schemas import PREFIX_PATTERN, ItemCreate, ItemOut, ItemUpdate, PageOut
from app.config import get_settings
from app.services import items as service

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.post(
    "",
    status_code=201,
    response_model=ItemOut,
    responses=problems(409, 413, 415),
    openapi_extra=json_body(ItemCreate),
)
async def create_item(request: Request, idempotency_key: IdempotencyKey = None) -> Response:
    """Create an item; 409 if the key exists."""
    body = await read_json(request, ItemCreate)
    value = encode_value(body.value, get_settings().max_value_bytes)
    idempotency = idempotency_request(request, idempotency_key, body.model_dump(), None)
    return outcome_response(await service.create_item(body.key, value, idempotency))


@router.get("/{key}", response_model=ItemOut, responses=problems(404))
async def read_item(key: KeyPath) -> Response:
    """Fetch one item by key."""
    record = await service.read_item(key)
    if record is None:
        raise ProblemError(404, "not_found", f"no item with key {key}")
    return item_response(record)


@router.put(
    "/{key}",
    response_model=ItemOut,
    responses=problems(404, 409, 412, 413, 415),
    openapi_extra=json_body(ItemUpdate),
)
async def update_item(
    key: KeyPath, request: Request, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None
) -> Response:
    """Replace an item's value and bump its version; If-Match makes it conditional."""
    expected = expected_version(if_match)
    body = await read_json(request, ItemUpdate)
    value = encode_value(body.value, get_settings().max_value_bytes)
    idempotency = idempotency_request(request, idempotency_key, body.model_dump(), if_match)
    return outcome_response(await service.update_item(key, value, expected, idempotency))


@router.delete("/{key}", status_code=204, responses=problems(404, 409, 412))
async def delete_item(
    key: KeyPath, request: Request, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None
) -> Response:
    """Delete an item; If-Match makes it conditional."""
    expected = expected_version(if_match)
    idempotency = idempotency_request(request, idempotency_key, None, if_match)
    return outcome_response(await service.delete_item(key, expected, idempotency))


@router.get("", response_model=PageOut, responses=problems())
async def list_items(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    prefix: Annotated[str | None, Query(pattern=PREFIX_PATTERN)] = None,
) -> Response:
    """A page of items in key order; follow `next_cursor` (or the Link header) for more."""
    _refuse_repeated(request, "limit", "cursor", "prefix")
    after = decode_cursor(cursor) if cursor else None
    records = await service.list_items(limit + 1, after, prefix)
    page, more = records[:limit], len(records) > limit
    next_cursor = encode_cursor(page[-1].key) if more else None
    link = None
    if next_cursor:
        query = {"limit": limit, "cursor": next_cursor, **({"prefix": prefix} if prefix else {})}
        link = f'</v1/items?{urlencode(query)}>; rel="next"'
    return page_response(page, next_cursor, link)


def _refuse_repeated(request: Request, *names: str) -> None:
    """422 for a parameter given twice: a proxy and this service could each read another one."""
    for name in names:
        if len(request.query_params.getlist(name)) > 1:
            error = {"loc": ("query", name), "msg": "given more than once", "type": "value_error"}
            raise validation_error([error])
