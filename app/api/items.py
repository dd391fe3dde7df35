"""/v1/items routes."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import WithJsonSchema
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.body import encode_value, read_json
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import (
    PROBLEM_JSON,
    ProblemError,
    problem_body,
    store_problem,
    validation_error,
)
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
from app.idempotency.keys import (
    IdempotencyRequest,
    MalformedIdempotencyKey,
    fingerprint,
    parse_idempotency_key,
)
from app.security.identity import identity_of
from app.services import items as service
from app.services.writes import Renderer, WriteResult
from app.store.errors import StoreError
from app.store.idempotency import IdempotentOutcome, StoredResponse
from app.store.items import ItemRecord

router = APIRouter(prefix="/v1/items", tags=["items"])

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

# Versions are BIGINT columns: a larger number was never issued, so it is malformed, not stale.
_VERSION_TAG = re.compile(r'"([0-9]{1,19})"')
_MAX_VERSION = 2**63 - 1
# orjson writes integers of at most 64 bits (signed or unsigned).
_ORJSON_INTS = range(-(2**63), 2**64)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # 413: the body cap applies to every request, whatever its method.
    common = (400, 401, 413, 422, 429, 500, 503)
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


def _item_bytes(record: ItemRecord) -> bytes:
    return _json_bytes(_item_body(record))


def _json_bytes(body: Any) -> bytes:
    """JSON for a response; integers past 64 bits go out as the floats they were sent as.

    PostgreSQL's jsonb prints a number such as 1e20 as the integer 100000000000000000000, which
    orjson cannot encode; every such integer came in as a float (orjson parses wider integer
    literals as floats too), so it goes back out as that float.
    """
    try:
        return orjson.dumps(body, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        return orjson.dumps(_wide_ints_as_floats(body), option=orjson.OPT_UTC_Z)


def _wide_ints_as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wide_ints_as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_floats(item) for item in value]
    if isinstance(value, int) and value not in _ORJSON_INTS:
        return float(value)
    return value


def _renderer(status: int) -> Renderer:
    """How a write's outcome is rendered (and, with an Idempotency-Key, stored for replay)."""

    def render(result: WriteResult) -> StoredResponse:
        if isinstance(result, StoreError):
            problem = store_problem(result)
            return StoredResponse(
                problem.status,
                problem_body(problem.status, problem.code, problem.detail),
                {**problem.headers, "Content-Type": PROBLEM_JSON},
            )
        if result is None:
            return StoredResponse(204, b"", {})
        headers = {"Content-Type": "application/json", "ETag": f'"{result.version}"'}
        if status == 201:
            headers["Location"] = f"/v1/items/{result.key}"
        return StoredResponse(status, _item_bytes(result), headers)

    return render


def _to_response(outcome: IdempotentOutcome) -> Response:
    headers = dict(outcome.response.headers)
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(outcome.response.body, outcome.response.status, headers=headers)


def _expected_version(if_match: str | None) -> int | None:
    """Strong If-Match with one version, or *; None means unconditional."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = _VERSION_TAG.fullmatch(if_match.strip())
    if tag and int(tag[1]) <= _MAX_VERSION:
        return int(tag[1])
    raise ProblemError(400, "bad_request", 'If-Match must be a version ETag such as "3", or *')


def _idempotency(
    request: Request, header: str | None, body: Any, if_match: str | None
) -> IdempotencyRequest | None:
    try:
        key = parse_idempotency_key(header)
    except MalformedIdempotencyKey as exc:
        raise ProblemError(400, "bad_request", str(exc)) from exc
    if key is None:
        return None
    return IdempotencyRequest(
        client=identity_of(request.scope).id,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, body, if_match),
    )


@router.post(
    "",
    status_code=201,
    response_model=ItemOut,
    responses=_problems(409, 413, 415),
    openapi_extra=_body_schema(ItemCreate),
)
async def create_item(request: Request, idempotency_key: IdempotencyKey = None) -> Response:
    """Create an item; 409 if the key exists."""
    body = await read_json(request, ItemCreate)
    encode_value(body.value, get_settings().max_value_bytes)
    idempotency = _idempotency(request, idempotency_key, body.model_dump(), None)
    outcome = await service.create_item(body.key, body.value, _renderer(201), idempotency)
    return _to_response(outcome)


@router.get("/{key}", response_model=ItemOut, responses=_problems(404))
async def read_item(key: KeyPath) -> Response:
    """Fetch one item by key."""
    record = await service.read_item(key)
    return Response(
        _item_bytes(record), headers={"ETag": f'"{record.version}"'}, media_type="application/json"
    )


@router.put(
    "/{key}",
    response_model=ItemOut,
    responses=_problems(404, 409, 412, 413, 415),
    openapi_extra=_body_schema(ItemUpdate),
)
async def update_item(
    key: KeyPath, request: Request, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None
) -> Response:
    """Replace an item's value and bump its version; If-Match makes it conditional."""
    expected = _expected_version(if_match)
    body = await read_json(request, ItemUpdate)
    encode_value(body.value, get_settings().max_value_bytes)
    idempotency = _idempotency(request, idempotency_key, body.model_dump(), if_match)
    outcome = await service.update_item(key, body.value, expected, _renderer(200), idempotency)
    return _to_response(outcome)


@router.delete("/{key}", status_code=204, responses=_problems(404, 409, 412))
async def delete_item(
    key: KeyPath, request: Request, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None
) -> Response:
    """Delete an item; If-Match makes it conditional."""
    expected = _expected_version(if_match)
    idempotency = _idempotency(request, idempotency_key, None, if_match)
    outcome = await service.delete_item(key, expected, _renderer(204), idempotency)
    return _to_response(outcome)


@router.get("", response_model=PageOut, responses=_problems())
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
    headers = {}
    if next_cursor:
        query = {"limit": limit, "cursor": next_cursor, **({"prefix": prefix} if prefix else {})}
        headers["Link"] = f'</v1/items?{urlencode(query)}>; rel="next"'
    body = {"items": [_item_body(r) for r in page], "next_cursor": next_cursor}
    return Response(_json_bytes(body), headers=headers, media_type="application/json")


def _refuse_repeated(request: Request, *names: str) -> None:
    """422 for a parameter given twice: a proxy and this service could each read another one."""
    for name in names:
        if len(request.query_params.getlist(name)) > 1:
            error = {"loc": ("query", name), "msg": "given more than once", "type": "value_error"}
            raise validation_error([error])


class _OtherMethods:
    """The last route of a path: any method no route above serves is a 405 naming all of them.

    Starlette's own 405 lists only the methods of the first route that matched the path.
    """

    def __init__(self, allow: str) -> None:
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ProblemError(
            405,
            "method_not_allowed",
            f"{scope['method']} is not allowed here; allowed: {self.allow}",
            headers={"Allow": self.allow},
        )


def _serve_head_and_refuse_other_methods() -> None:
    """HEAD answers like GET without a body (RFC 9110 9.3.2); other methods get a full Allow."""
    methods: dict[str, set[str]] = {}
    for route in [r for r in router.routes if isinstance(r, APIRoute)]:
        route_methods = route.methods or set()
        allowed = methods.setdefault(route.path, set())
        allowed.update(route_methods)
        if "GET" in route_methods:
            # Out of the schema, which documents GET; the server sends no body for HEAD.
            router.add_api_route(
                route.path.removeprefix(router.prefix),
                route.endpoint,
                methods=["HEAD"],
                include_in_schema=False,
            )
            allowed.add("HEAD")
    for path, allowed in methods.items():
        # A Starlette route may be any ASGI app; the annotation names request handlers only.
        endpoint: Any = _OtherMethods(", ".join(sorted(allowed)))
        router.add_route(path, endpoint, include_in_schema=False)


_serve_head_and_refuse_other_methods()
