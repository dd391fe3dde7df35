"""Writes run with their rendering inside one database job, so an idempotent replay returns
exactly the bytes the first attempt produced.

Writes made in the same event-loop pass share one database job and one transaction
(`app/store/batch.py`); a write that cannot share, or a shared transaction that failed, runs
again on its own. Every write still gets its own outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from app.batching import Batch, LoopPassBatcher
from app.config import get_settings
from app.idempotency.keys import IdempotencyRequest
from app.observability.metrics import IDEMPOTENCY_EVENTS
from app.store.batch import RUN_ALONE, SharedTransactionFailed, Write, write_batch
from app.store.db import run_db
from app.store.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ItemNotFound,
    KeyExists,
    VersionMismatch,
)
from app.store.idempotency import IdempotentOutcome, StoredResponse, execute_once
from app.store.items import ItemRecord

WriteResult = ItemRecord | None | ItemNotFound | KeyExists | VersionMismatch
Renderer = Callable[[WriteResult], StoredResponse]

# Writes per shared transaction: how long row locks are held grows with it.
MAX_BATCH = 32


class WriteBatcher(LoopPassBatcher[Write, Any]):
    """Answers the writes of one loop pass with one shared transaction (or each alone)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.shared_failures = 0  # for tests and debugging: shared transactions rolled back

    def _split(self, batch: Batch[Write, Any]) -> list[Batch[Write, Any]]:
        return [batch[n : n + self.max_batch] for n in range(0, len(batch), self.max_batch)]

    async def _answer(self, calls: list[Write]) -> list[Any]:
        if len(calls) == 1:
            return [await _alone(calls[0])]
        try:
            answers = await run_db(write_batch, calls)
        except SharedTransactionFailed:
            self.shared_failures += 1
            answers = [RUN_ALONE] * len(calls)
        alone = [n for n, answer in enumerate(answers) if answer is RUN_ALONE]
        if alone:
            for n, answer in zip(
                alone, await asyncio.gather(*(_alone(calls[n]) for n in alone)), strict=True
            ):
                answers[n] = answer
        return answers


async def _alone(write: Write) -> Any:
    """The write in a transaction of its own; its error, if any, is its answer."""
    try:
        return await run_db(write.run)
    except Exception as exc:
        return exc


_writes = WriteBatcher()


async def perform_write(
    key: str,
    operation: Callable[[], ItemRecord | None],
    render: Renderer,
    idempotency: IdempotencyRequest | None,
) -> IdempotentOutcome:
    """Run a store write to item `key` and render its outcome; exactly once per Idempotency-Key."""

    def action() -> StoredResponse:
        try:
            result: WriteResult = operation()
        except (ItemNotFound, KeyExists, VersionMismatch) as exc:
            result = exc  # a 4xx outcome is a result too, and replays like one
        return render(result)

    # Database metrics label jobs by function name: name this one after the store write it runs.
    name = getattr(operation, "func", operation).__name__
    if idempotency is None:

        def once() -> IdempotentOutcome:
            return IdempotentOutcome(action(), replayed=False)

        write = Write(key, _in_this_context(once, name))
        return await _writes.submit(write)

    def exactly_once() -> IdempotentOutcome:
        return execute_once(
            idempotency.client,
            idempotency.key,
            idempotency.fingerprint,
            get_settings().idempotency_ttl,
            action,
        )

    write = Write(key, _in_this_context(exactly_once, "execute_once"), session_locked=True)
    try:
        outcome: IdempotentOutcome = await _writes.submit(write)
    except IdempotencyKeyReused:
        IDEMPOTENCY_EVENTS.labels("key_reused").inc()
        raise
    except IdempotencyInProgress:
        IDEMPOTENCY_EVENTS.labels("in_progress").inc()
        raise
    if outcome.replayed:
        IDEMPOTENCY_EVENTS.labels("replayed").inc()
    return outcome


def _in_this_context(job: Callable[[], IdempotentOutcome], name: str) -> Callable[[], Any]:
    """`job`, run in the calling request's context (its trace and log fields) wherever it runs."""
    context = contextvars.copy_context()

    def run() -> IdempotentOutcome:
        return context.run(job)

    run.__name__ = name
    return run
