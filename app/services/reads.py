"""Reads by key made in the same event-loop pass are answered by one database job.

Under load a worker has many GETs waiting at once; each on its own costs a hop to a database
thread, the ORM's per-query work and a round trip. Here the first read of a pass schedules a
flush for the next pass, the reads that arrive meanwhile join it, and one `key IN (...)` query
answers them all. A lone read runs the one-key query, one loop pass later than it would alone.

Nothing is cached: every read is answered by a query that starts after the read was asked for,
so a write that finished before the read began is always seen (tests/services/test_reads.py).
"""

from __future__ import annotations

import asyncio

from app.store import items as store
from app.store.db import run_db
from app.store.errors import ItemNotFound
from app.store.items import ItemRecord

# Each batch size is its own compiled (and, on PostgreSQL, prepared) statement per thread.
MAX_BATCH = 32


class ReadBatcher:
    """Collects `get(key)` calls of one loop pass into `key IN (...)` queries."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self.queries_run = 0  # for tests and debugging: database jobs started
        self._queued: list[tuple[str, asyncio.Future[ItemRecord]]] = []
        self._flushes: set[asyncio.Task[None]] = set()  # strong references until they finish

    async def get(self, key: str) -> ItemRecord:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ItemRecord] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush_queued)
        self._queued.append((key, future))
        return await future

    def _flush_queued(self) -> None:
        queued, self._queued = self._queued, []
        keys = list(dict.fromkeys(key for key, _ in queued))  # unique, in arrival order
        for start in range(0, len(keys), self.max_batch):
            chunk = keys[start : start + self.max_batch]
            members = set(chunk)
            waiting = [(key, future) for key, future in queued if key in members]
            task = asyncio.ensure_future(self._answer(chunk, waiting))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _answer(
        self, keys: list[str], waiting: list[tuple[str, asyncio.Future[ItemRecord]]]
    ) -> None:
        self.queries_run += 1
        try:
            if len(keys) == 1:
                try:
                    found = {keys[0]: await run_db(store.get_item, keys[0])}
                except ItemNotFound:
                    found = {}
            else:
                found = await run_db(store.get_items, keys)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # the query failed: every read in it hears why
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in waiting:
            if future.done():  # the caller gave up (disconnect, deadline)
                continue
            record = found.get(key)
            if record is None:
                future.set_exception(ItemNotFound(key))
            else:
                future.set_result(record)
