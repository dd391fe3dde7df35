"""Writes run with their rendering inside one database job, so an idempotent replay returns
exactly the bytes the first attempt produced.

Writes made in the same event-loop pass share one database job and one transaction
(`app/store/batch.py`); a write that cannot share, or a shared transaction that failed, runs
again on its own. Every write still gets its own outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, Literal

from app.batching import Batch, LoopPassBatcher
from app.config import get_settings
from app.idempotency.keys import IdempotencyRequest
from app.observability.metrics import DB_WRITES, IDEMPOTENCY_EVENTS, labelled
from app.store.batch import RUN_ALONE, PlainWrite, SharedTransactionFailed, Write, write_batch
from app.store.db import run_db
from app.store.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ItemNotFound,
    KeyExists,
    VersionMismatch,
)
from app.store.idempotency import Claim, IdempotentOutcome, StoredResponse, execute_once
from app.store.items import ItemRecord

WriteResult = ItemRecord | None | ItemNotFound | KeyExists | VersionMismatch
Renderer = Callable[[WriteResult], StoredResponse]
PlainChange = tuple[Literal["create", "update"], Any, int | None]  # kind, value, expected version

# Writes per shared transaction: how long row locks are held grows with it.
MAX_BATCH = 32


class WriteBatcher(LoopPassBatcher[Write, Any]):
    """Answers the writes of one loop pass with one shared transaction (or each alone)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__()
        self.max_batch = max_batch

    def _split(self, batch: Batch[Write, Any]) -> list[Batch[Write, Any]]:
        return [batch[n : n + self.max_batch] for n in range(0, len(batch), self.max_batch)]

    async def _answer(self, calls: list[Write]) -> list[Any]:
        if len(calls) == 1:
            return [await _alone(calls[0])]
        try:
            answers = await run_db(write_batch, calls)
        except SharedTransactionFailed:  # rolled back whole: every write runs again alone
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
    labelled(DB_WRITES, "alone").inc()
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
    plain: PlainChange | None = None,
) -> IdempotentOutcome:
    """Run a store write to item `key` and render its outcome; exactly once per Idempotency-Key.

    `plain` says what `operation` writes (kind, value, expected version), so that writes of one
    kind sent together can be made by one statement.
    """

    def finish(result: WriteResult) -> IdempotentOutcome:
        return IdempotentOutcome(render(result), replayed=False)

    together = PlainWrite(*plain, finish=finish) if plain else None
    if idempotency is None:

        def once() -> IdempotentOutcome:
            return finish(_result_of(operation))

        # Database metrics label jobs by function name: name this one after the store write.
        name = getattr(operation, "func", operation).__name__
        return await _writes.submit(Write(key, _in_this_context(once, name), plain=together))

    claim = Claim(
        idempotency.client,
        idempotency.key,
        idempotency.fingerprint,
        get_settings().idempotency_ttl,
    )

    def exactly_once() -> IdempotentOutcome:
        action = functools.partial(_render_result, operation, render)
        return execute_once(claim.client, claim.key, claim.fingerprint, claim.ttl_seconds, action)

    run = _in_this_context(exactly_once, "execute_once")
    write = Write(key, run, plain=together, claim=claim)
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


def _result_of(operation: Callable[[], ItemRecord | None]) -> WriteResult:
    try:
        return operation()
    except (ItemNotFound, KeyExists, VersionMismatch) as exc:
        return exc  # a 4xx outcome is a result too, and replays like one


def _render_result(operation: Callable[[], ItemRecord | None], render: Renderer) -> StoredResponse:
    return render(_result_of(operation))


def _in_this_context(job: Callable[[], IdempotentOutcome], name: str) -> Callable[[], Any]:
    """`job`, run in the calling request's context (its trace and log fields) wherever it runs."""
    context = contextvars.copy_context()

    def run() -> IdempotentOutcome:
        return context.run(job)

    run.__name__ = name
    return run
