"""Idempotency records, written in the same transaction as the write they describe.

A request holds a lock on its (client, key) for the length of its transaction: PostgreSQL a
transaction-scoped advisory lock, MariaDB/MySQL a named lock released after commit, SQLite its
IMMEDIATE write transaction. A second request with the same key either finds the lock taken
(in progress) or, once the first committed, finds its record (replay). A crash rolls back the
write and the record together, so neither can exist without the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from app.store.compiled import fetch_rows, insert_row
from app.store.errors import IdempotencyInProgress, IdempotencyKeyReused, StoreError
from app.store.models import IdempotencyRecord

_RECORD = ("fingerprint", "status", "body", "headers", "expires_at")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response exactly as it will be replayed."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IdempotentOutcome:
    response: StoredResponse
    replayed: bool


def execute_once(
    client: str,
    key: str,
    fingerprint: str,
    ttl_seconds: int,
    action: Callable[[], StoredResponse],
) -> IdempotentOutcome:
    """Run `action` once per (client, key) within the TTL; replay its stored response after."""
    # No savepoint when nested in a shared transaction (app/store/batch.py); the outcomes that
    # are errors are raised after the block, so they never mark it for rollback.
    with _key_lock(client, key), transaction.atomic(savepoint=False):
        outcome = _execute_locked(client, key, fingerprint, ttl_seconds, action)
    if isinstance(outcome, StoreError):
        raise outcome
    return outcome


def _execute_locked(
    client: str,
    key: str,
    fingerprint: str,
    ttl_seconds: int,
    action: Callable[[], StoredResponse],
) -> IdempotentOutcome | StoreError:
    if connection.vendor == "postgresql" and not _try_xact_lock(client, key):
        return IdempotencyInProgress(key)
    now = timezone.now()
    rows = fetch_rows(
        "idempotency_record",
        lambda: IdempotencyRecord.objects.filter(client=client, key=key).values_list(*_RECORD),
        [client, key],
    )
    previous = rows[0] if rows else None
    if previous is not None:
        old_fingerprint, status, body, headers, expires_at = previous
        if expires_at > now:
            if old_fingerprint != fingerprint:
                return IdempotencyKeyReused(key)
            return IdempotentOutcome(StoredResponse(status, bytes(body), headers), True)
        IdempotencyRecord.objects.filter(client=client, key=key).delete()
    response = action()
    try:
        record = {"client": client, "key": key, "fingerprint": fingerprint}
        outcome = {"status": response.status, "body": response.body, "headers": response.headers}
        times = {"created_at": now, "expires_at": now + timedelta(seconds=ttl_seconds)}
        insert_row(IdempotencyRecord, record | outcome | times)
    except IntegrityError:
        # Only reachable if a lock was lost. The failed INSERT marked the transaction for
        # rollback, so the write goes with it.
        transaction.set_rollback(True)
        return IdempotencyInProgress(key)
    return IdempotentOutcome(response, False)


def purge_expired() -> int:
    """Delete expired records; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


def _lock_id(client: str, key: str) -> bytes:
    return hashlib.blake2b(f"{client}\0{key}".encode(), digest_size=8).digest()


def _try_xact_lock(client: str, key: str) -> bool:
    lock_id = int.from_bytes(_lock_id(client, key), "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id])
        row = cursor.fetchone()
    return bool(row and row[0])


@contextmanager
def _key_lock(client: str, key: str) -> Iterator[None]:
    """MariaDB/MySQL named locks outlive transactions: take one before, release after commit."""
    if connection.vendor != "mysql":
        yield
        return
    name = "kvkit-idem-" + _lock_id(client, key).hex()
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
        row = cursor.fetchone()
    if not (row and row[0] == 1):
        raise IdempotencyInProgress(key)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])
