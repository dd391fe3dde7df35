"""Response bodies: items, pages and write outcomes, fresh or replayed, rendered by one code path.

A value is stored as JSON text and spliced into the response as it is (orjson.Fragment): no
parse and no re-encode, so what was accepted is what is returned. A replayed write is rendered
from its recorded outcome by the same function as the first answer, so it carries the same
status, headers and bytes (the problem's request_id is the first request's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.responses import Response

from app.api.problems import RETRY_AFTER, problem_response
from app.store.records import ItemRecord, Outcome, Status

JSON = "application/json"


def item_body(record: ItemRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "value": orjson.Fragment(record.value),
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def json_bytes(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def etag(version: int) -> str:
    return f'"{version}"'


def item_response(record: ItemRecord, status: int = 200, **headers: str) -> Response:
    headers["ETag"] = etag(record.version)
    return Response(json_bytes(item_body(record)), status, headers=headers, media_type=JSON)


def page_response(
    records: Sequence[ItemRecord], next_cursor: str | None, link: str | None
) -> Response:
    body = {"items": [item_body(record) for record in records], "next_cursor": next_cursor}
    headers = {"Link": link} if link else None
    return Response(json_bytes(body), headers=headers, media_type=JSON)


def outcome_response(outcome: Outcome) -> Response:
    """A write's answer, fresh or replayed (then with `Idempotent-Replayed: true`)."""
    response = _answer(outcome)
    if outcome.replay_of is not None:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _answer(outcome: Outcome) -> Response:
    status, key, item = outcome.status, outcome.key, outcome.item
    if status is Status.CREATED:
        assert item is not None
        return item_response(item, 201, Location=f"/v1/items/{item.key}")
    if status is Status.UPDATED:
        assert item is not None
        return item_response(item)
    if status is Status.DELETED:
        return Response(status_code=204)
    request_id = outcome.replay_of
    if status is Status.NOT_FOUND:
        return problem_response(404, status.value, f"no item with key {key}", request_id=request_id)
    if status is Status.KEY_EXISTS:
        detail = f"an item with key {key} exists already"
        return problem_response(409, status.value, detail, request_id=request_id)
    if status is Status.VERSION_MISMATCH:
        assert outcome.current_version is not None
        return problem_response(
            412,
            status.value,
            f"If-Match does not match the current version {outcome.current_version}",
            headers={"ETag": etag(outcome.current_version)},
            request_id=request_id,
        )
    if status is Status.IN_PROGRESS:
        detail = "a request with this Idempotency-Key is still being processed; retry shortly"
        return problem_response(409, status.value, detail, headers=RETRY_AFTER)
    assert status is Status.KEY_REUSED
    detail = "this Idempotency-Key was used for a different request; use a new key"
    return problem_response(422, status.value, detail)
