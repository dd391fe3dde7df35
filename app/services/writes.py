"""Writes run with their rendering inside one database job, so an idempotent replay returns
exactly the bytes the first attempt produced."""

from __future__ import annotations

from collections.abc import Callable

from app.config import get_settings
from app.idempotency.keys import IdempotencyRequest
from app.store.db import run_db
from app.store.errors import ItemNotFound, KeyExists, VersionMismatch
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

    if idempotency is None:
        return IdempotentOutcome(await run_db(action), replayed=False)
    return await run_db(
        execute_once,
        idempotency.client,
        idempotency.key,
        idempotency.fingerprint,
        get_settings().idempotency_ttl,
        action,
    )
