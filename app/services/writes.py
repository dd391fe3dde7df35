"""Writes run with their rendering inside one database job, so an idempotent replay returns
exactly the bytes the first attempt produced."""

from __future__ import annotations

from collections.abc import Callable

from app.config import get_settings
from app.idempotency.keys import IdempotencyRequest
from app.observability.metrics import IDEMPOTENCY_EVENTS
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


async def perform_write(
    operation: Callable[[], ItemRecord | None],
    render: Renderer,
    idempotency: IdempotencyRequest | None,
) -> IdempotentOutcome:
    """Run a store write and render its outcome; exactly once per Idempotency-Key."""

    def action() -> StoredResponse:
        try:
            result: WriteResult = operation()
        except (ItemNotFound, KeyExists, VersionMismatch) as exc:
            result = exc  # a 4xx outcome is a result too, and replays like one
        return render(result)

    # Database metrics label jobs by function name: name this one after the store write it runs.
    action.__name__ = getattr(operation, "func", operation).__name__
    if idempotency is None:
        return IdempotentOutcome(await run_db(action), replayed=False)
    try:
        outcome = await run_db(
            execute_once,
            idempotency.client,
            idempotency.key,
            idempotency.fingerprint,
            get_settings().idempotency_ttl,
            action,
        )
    except IdempotencyKeyReused:
        IDEMPOTENCY_EVENTS.labels("key_reused").inc()
        raise
    except IdempotencyInProgress:
        IDEMPOTENCY_EVENTS.labels("in_progress").inc()
        raise
    if outcome.replayed:
        IDEMPOTENCY_EVENTS.labels("replayed").inc()
    return outcome
