"""The store as the event loop sees it: each call runs its ORM work on a database thread.

Callers hand over values (keys, `Write`s) and get values back (`ItemRecord`s, `Outcome`s); the
database metrics label each job by what it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.store import items, maintenance, writes
from app.store.db import run_db
from app.store.records import ItemRecord, Outcome, Write


async def read_item(key: str) -> ItemRecord | None:
    return await run_db("get_item", items.get_item, key)


async def read_items(keys: Sequence[str]) -> dict[str, ItemRecord]:
    """The stored items among `keys` (distinct), by key, with one query."""
    return await run_db("get_items", items.get_items, keys)


async def list_items(limit: int, after: str | None, prefix: str | None) -> list[ItemRecord]:
    return await run_db("list_items", items.list_items, limit, after, prefix)


async def ping() -> None:
    await run_db("ping", items.ping)


async def last_purge() -> datetime | None:
    """When purge-idempotency last succeeded (app/store/maintenance.py)."""
    return await run_db("maintenance", maintenance.last_success, maintenance.PURGE_TASK)


async def write(batch: Sequence[Write]) -> list[Outcome]:
    """Run `batch` in one transaction (app/store/writes.py); one outcome per write."""
    kinds = {write.kind for write in batch}
    operation = kinds.pop().value if len(kinds) == 1 else "mixed"
    return await run_db(operation, writes.execute, batch)
