"""Idempotency records, written in the same transaction as the write they describe.

A request holds a lock on its (client, key) for the length of its transaction: PostgreSQL a
transaction-scoped advisory lock, MariaDB/MySQL a named lock released after commit, SQLite its
IMMEDIATE write transaction. A second request with the same key either finds the lock taken
(in progress) or, once the first committed, finds its record (replay). A crash rolls back the
write and the record together, so neither can exist without the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from app.store.compiled import (
    column_of,
    compiled_insert,
    convert_rows,
    execute_unprepared,
    fetch_rows,
    insert_row,
)
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
    claim = Claim(client, key, fingerprint, ttl_seconds)
    now = timezone.now()
    rows = fetch_rows(
        "idempotency_record",
        lambda: IdempotencyRecord.objects.filter(client=client, key=key).values_list(*_RECORD),
        [client, key],
    )
    decided = _decided(claim, rows[0] if rows else None, now)
    if decided is not None:
        return decided
    response = action()
    try:
        insert_row(IdempotencyRecord, _record_row(claim, response, now))
    except IntegrityError:
        # Only reachable if a lock was lost. The failed INSERT marked the transaction for
        # rollback, so the write goes with it.
        transaction.set_rollback(True)
        return IdempotencyInProgress(key)
    return IdempotentOutcome(response, False)


@dataclass(frozen=True, slots=True)
class Claim:
    """One write's Idempotency-Key, as `claim_many` and `record_many` take it."""

    client: str
    key: str
    fingerprint: str
    ttl_seconds: int


Claimed = IdempotentOutcome | IdempotencyInProgress | IdempotencyKeyReused | None


def claim_many(claims: Sequence[Claim]) -> list[Claimed]:
    """PostgreSQL, in the caller's transaction: what `execute_once` decides before running its
    action, for several distinct (client, key) at once. None means "run the write, then
    `record_many` it"; anything else is the write's answer.

    One statement takes all the advisory locks and one query finds all the records, instead of
    two round trips per write.
    """
    # Arrays, not one placeholder per claim: one text for any number of claims, so the server
    # prepares each statement once; %b sends them in binary (see app/store/compiled.py).
    numbers = [_lock_number(claim.client, claim.key) for claim in claims]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(n) FROM unnest(%b::bigint[])"
            " WITH ORDINALITY AS l (n, position) ORDER BY position",
            [numbers],
        )
        locked = [row[0] for row in cursor.fetchall()]
        # Planned afresh each time: a plan cached while the table was small kept scanning all of
        # it (a hash join over a sequential scan) as it grew.
        pairs = [[c.client for c in claims], [c.key for c in claims]]
        execute_unprepared(cursor, _records_sql(), pairs)
        raw = cursor.fetchall()
    first = claims[0]
    rows = convert_rows(
        "idempotency_pair",
        lambda: IdempotencyRecord.objects.filter(client=first.client, key=first.key).values_list(
            "client", "key", *_RECORD
        ),
        [first.client, first.key],
        raw,
    )
    found = {(client, key): rest for client, key, *rest in rows}
    now = timezone.now()
    answers: list[Claimed] = []
    for claim, got_lock in zip(claims, locked, strict=True):
        previous = found.get((claim.client, claim.key))
        answers.append(
            _decided(claim, previous, now) if got_lock else IdempotencyInProgress(claim.key)
        )
    return answers


def _decided(claim: Claim, previous: Sequence[Any] | None, now: datetime) -> Claimed:
    """What the record found under a claim's key (fields as in _RECORD) means for its write:
    None to run it, a replay, or a key reused for another request."""
    if previous is None:
        return None
    old_fingerprint, status, body, headers, expires_at = previous
    if expires_at <= now:  # expired: the key counts as new
        IdempotencyRecord.objects.filter(client=claim.client, key=claim.key).delete()
        return None
    if old_fingerprint != claim.fingerprint:
        return IdempotencyKeyReused(claim.key)
    return IdempotentOutcome(StoredResponse(status, bytes(body), headers), True)


def _record_row(claim: Claim, response: StoredResponse, now: datetime) -> dict[str, Any]:
    return {
        "client": claim.client,
        "key": claim.key,
        "fingerprint": claim.fingerprint,
        "status": response.status,
        "body": response.body,
        "headers": response.headers,
        "created_at": now,
        "expires_at": now + timedelta(seconds=claim.ttl_seconds),
    }


def _records_sql() -> str:
    """The records of (client, key) pairs given as two arrays, in one text for any number of
    pairs."""
    quote = connection.ops.quote_name
    table = quote(IdempotencyRecord._meta.db_table)
    names = ("client", "key", *_RECORD)
    columns = ", ".join(f"r.{quote(column_of(IdempotencyRecord, name))}" for name in names)
    client, key = (quote(column_of(IdempotencyRecord, name)) for name in ("client", "key"))
    # Only quoted names from the model go into the text; every value is a bound parameter.
    return (
        f"SELECT {columns} FROM unnest(%b::varchar[], %b::varchar[]) AS p (client, key)"  # noqa: S608  # nosec B608
        f" JOIN {table} AS r ON r.{client} = p.client AND r.{key} = p.key"
    )


def record_many(done: Sequence[tuple[Claim, StoredResponse]]) -> None:
    """Store the responses of writes `claim_many` let run, in the same transaction, one INSERT."""
    now = timezone.now()
    rows = [_record_row(claim, response, now) for claim, response in done]
    sql, params = compiled_insert(IdempotencyRecord, rows, None)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def purge_expired() -> int:
    """Delete expired records; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


def _lock_id(client: str, key: str) -> bytes:
    return hashlib.blake2b(f"{client}\0{key}".encode(), digest_size=8).digest()


def _lock_number(client: str, key: str) -> int:
    return int.from_bytes(_lock_id(client, key), "big", signed=True)


def _try_xact_lock(client: str, key: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_number(client, key)])
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
