"""Reads by key made in the same event-loop pass are answered by one database job.

Each GET on its own costs a hop to a database thread, the ORM's per-query work and a round trip;
one `key IN (...)` query answers a whole batch. A lone read runs the one-key query.

Nothing is cached: every read is answered by a query that starts after the read was asked for,
so a write that finished before the read began is always seen (tests/services/test_reads.py).
"""

from __future__ import annotations

from app.batching import MAX_BATCH, LoopPassBatcher
from app.store import access
from app.store.records import ItemRecord


class ReadBatcher(LoopPassBatcher[str, ItemRecord | None]):
    """Answers `get(key)` calls of one loop pass with `key IN (...)` queries."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch)

    async def get(self, key: str) -> ItemRecord | None:
        """The item, or None when no item has that key."""
        return await self.submit(key)

    async def _answer(self, calls: list[str]) -> list[ItemRecord | Exception | None]:
        keys = list(dict.fromkeys(calls))
        if len(keys) == 1:
            found = {keys[0]: await access.read_item(keys[0])}
        else:
            found = dict(await access.read_items(keys))
        return [found.get(key) for key in calls]
