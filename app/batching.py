"""Calls made in one event-loop pass, answered together in the next one.

Under load a worker has many requests waiting at the same step at once (a rate-limit check, a
read by key). The first call of a pass schedules a flush for the next pass; calls made meanwhile
join it; the subclass answers the whole batch with one round trip. A lone call waits one loop
pass, nothing more. Every caller still gets its own answer or its own error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)  # what one caller asks for
R = TypeVar("R")  # what one caller gets back

Batch = list[tuple[C, "asyncio.Future[R]"]]

# Calls answered together at most, for the database batchers: each size of a read batch is a
# statement of its own (compiled, and on PostgreSQL prepared, per connection), and a write batch
# holds its row locks until its one COMMIT.
MAX_BATCH = 32


class LoopPassBatcher(Generic[C, R]):
    """Collects `submit(call)` of one loop pass and hands them to `_answer` together, in parts
    of at most `max_batch` distinct calls (None: one part)."""

    def __init__(self, max_batch: int | None = None) -> None:
        self.max_batch = max_batch
        self.batches_answered = 0  # for tests and debugging: round trips started
        self._queued: Batch[C, R] = []
        self._flushes: set[asyncio.Task[None]] = set()  # strong references until they finish

    async def submit(self, call: C) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush_queued)
        self._queued.append((call, future))
        return await future

    async def _answer(self, calls: list[C]) -> list[R | Exception]:
        """One answer (or error) per call, in order; raising fails every call of the batch."""
        raise NotImplementedError

    def _split(self, batch: Batch[C, R]) -> list[Batch[C, R]]:
        """Parts answered separately; equal calls stay in one part."""
        if self.max_batch is None or len(batch) <= self.max_batch:
            return [batch]
        distinct = list(dict.fromkeys(call for call, _ in batch))
        parts = []
        for start in range(0, len(distinct), self.max_batch):
            members = set(distinct[start : start + self.max_batch])
            parts.append([(call, future) for call, future in batch if call in members])
        return parts

    def _flush_queued(self) -> None:
        queued, self._queued = self._queued, []
        for part in self._split(queued):
            task = asyncio.ensure_future(self._settle(part))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _settle(self, batch: Batch[C, R]) -> None:
        self.batches_answered += 1
        try:
            answers = await self._answer([call for call, _ in batch])
        except asyncio.CancelledError:  # shutting down: nobody will get an answer
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole round trip failed: every caller hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # the caller gave up (disconnect, deadline)
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
