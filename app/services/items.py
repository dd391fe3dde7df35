"""Item use cases; every database call goes through `run_db`."""

from __future__ import annotations

from typing import Any

from app.store import items as store
from app.store.db import run_db
from app.store.items import ItemRecord


async def read_item(key: str) -> ItemRecord:
    return await run_db(store.get_item, key)


async def create_item(key: str, value: Any) -> ItemRecord:
    return await run_db(store.create_item, key, value)


async def update_item(key: str, value: Any, expected_version: int | None) -> ItemRecord:
    return await run_db(store.update_item, key, value, expected_version)


async def delete_item(key: str, expected_version: int | None) -> None:
    await run_db(store.delete_item, key, expected_version)


async def list_items(limit: int, after: str | None, prefix: str | None) -> list[ItemRecord]:
    return await run_db(store.list_items, limit, after, prefix)


async def database_ready() -> None:
    await run_db(store.ping)
