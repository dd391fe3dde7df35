"""Item use cases; every database call goes through `run_db`."""

from __future__ import annotations

import functools
from typing import Any

from app.idempotency.keys import IdempotencyRequest
from app.services.reads import ReadBatcher
from app.services.writes import PlainChange, Renderer, perform_write
from app.store import items as store
from app.store.db import run_db
from app.store.idempotency import IdempotentOutcome
from app.store.items import ItemRecord

_reads = ReadBatcher()


async def read_item(key: str) -> ItemRecord:
    return await _reads.get(key)


async def list_items(limit: int, after: str | None, prefix: str | None) -> list[ItemRecord]:
    return await run_db(store.list_items, limit, after, prefix)


async def create_item(
    key: str, value: Any, render: Renderer, idempotency: IdempotencyRequest | None
) -> IdempotentOutcome:
    operation = functools.partial(store.create_item, key, value)
    return await perform_write(key, operation, render, idempotency, ("create", value, None))


async def update_item(
    key: str,
    value: Any,
    expected_version: int | None,
    render: Renderer,
    idempotency: IdempotencyRequest | None,
) -> IdempotentOutcome:
    operation = functools.partial(store.update_item, key, value, expected_version)
    plain: PlainChange = ("update", value, expected_version)
    return await perform_write(key, operation, render, idempotency, plain)


async def delete_item(
    key: str,
    expected_version: int | None,
    render: Renderer,
    idempotency: IdempotencyRequest | None,
) -> IdempotentOutcome:
    operation = functools.partial(store.delete_item, key, expected_version)
    return await perform_write(key, operation, render, idempotency)


async def database_ready() -> None:
    await run_db(store.ping)
