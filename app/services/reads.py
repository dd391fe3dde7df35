"""Reads by key made in the same event-loop pass are answered by one database job.

Each GET on its own costs a hop to a database thread, the ORM's per-query work and a round trip;
one `key IN (...)` query answers a whole batch. A lone read runs the one-key query.

Nothing is cached: every read is answered by a query that starts after the read was asked for,
so a write that finished before the read began is always seen (tests/services/test_reads.py).
"""

from __future__ import annotations

from app.batching import Batch, LoopPassBatcher
from app.store import items as store
from app.store.db import run_db
from app.store.errors import ItemNotFound
from app.store.items import ItemRecord

# Each batch size is its own compiled (and, on PostgreSQL, prepared) statement per thread.
MAX_BATCH = 32


class ReadBatcher(LoopPassBatcher[str, ItemRecord]):
    """Answers `get(key)` calls of one loop pass with `key IN (...)` queries."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__()
        self.max_batch = max_batch

    async def get(self, key: str) -> ItemRecord:
        return await self.submit(key)

    def _split(self, batch: Batch[str, ItemRecord]) -> list[Batch[str, ItemRecord]]:
        """Parts of at most `max_batch` distinct keys; a repeated key stays in one part."""
        keys = list(dict.fromkeys(key for key, _ in batch))
        parts = []
        for start in range(0, len(keys), self.max_batch):
            members = set(keys[start : start + self.max_batch])
            parts.append([(key, future) for key, future in batch if key in members])
        return parts

    async def _answer(self, calls: list[str]) -> list[ItemRecord | Exception]:
        keys = list(dict.fromkeys(calls))
        if len(keys) == 1:
            try:
                found = {keys[0]: await run_db(store.get_item, keys[0])}
            except ItemNotFound:
                found = {}
        else:
            found = await run_db(store.get_items, keys)
        return [found.get(key) or ItemNotFound(key) for key in calls]
