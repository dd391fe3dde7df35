"""Item use cases between the HTTP layer and the store."""

from __future__ import annotations

import contextvars

from app.config import get_settings
from app.idempotency.keys import IdempotencyRequest
from app.observability.context import request_id_var
from app.services.reads import ReadBatcher
from app.services.writes import perform_write
from app.store import access
from app.store.records import Claim, ItemRecord, Outcome, Write, WriteKind

_reads = ReadBatcher()


async def read_item(key: str) -> ItemRecord | None:
    """The item, or None when no item has that key."""
    return await _reads.get(key)


async def list_items(limit: int, after: str | None, prefix: str | None) -> list[ItemRecord]:
    return await access.list_items(limit, after, prefix)


async def create_item(key: str, value: str, idempotency: IdempotencyRequest | None) -> Outcome:
    """Create item `key` holding the JSON text `value`."""
    return await perform_write(_write(WriteKind.CREATE, key, value, None, idempotency))


async def update_item(
    key: str, value: str, expected_version: int | None, idempotency: IdempotencyRequest | None
) -> Outcome:
    return await perform_write(_write(WriteKind.UPDATE, key, value, expected_version, idempotency))


async def delete_item(
    key: str, expected_version: int | None, idempotency: IdempotencyRequest | None
) -> Outcome:
    return await perform_write(_write(WriteKind.DELETE, key, None, expected_version, idempotency))


async def database_ready() -> None:
    await access.ping()


def _write(
    kind: WriteKind,
    key: str,
    value: str | None,
    expected_version: int | None,
    idempotency: IdempotencyRequest | None,
) -> Write:
    claim = None
    if idempotency is not None:
        claim = Claim(
            client=idempotency.client,
            key=idempotency.key,
            fingerprint=idempotency.fingerprint,
            ttl_seconds=get_settings().idempotency_ttl,
            request_id=request_id_var.get(),
        )
    return Write(kind, key, value, expected_version, claim, contextvars.copy_context())
