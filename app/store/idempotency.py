"""Idempotency-Key records: the outcome of a write, kept in the same transaction as the write.

A write with a claim takes its (client, key) lock for the length of its transaction, without
waiting: a PostgreSQL transaction-scoped advisory lock, a MariaDB/MySQL named lock released
once the transaction has ended (app/store/writes.py), or on SQLite the IMMEDIATE write
transaction itself. A second request with the same key either finds the lock taken (in
progress) or, once the first committed, finds its record (replay). A crash rolls back the write
and the record together, so neither can exist without the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models.sql import InsertQuery

from app.store import dialects
from app.store.compiled import Param, Statement, field_of
from app.store.dialects.base import lock_id
from app.store.models import IdempotencyRecord
from app.store.records import RECORDED, Claim, ItemRecord, Outcome, Status, Write

# What a record holds besides its (client, key), in the order the statements below use.
_STORED = (
    "fingerprint",
    "outcome",
    "item_key",
    "version",
    "value",
    "item_created_at",
    "item_updated_at",
    "request_id",
    "expires_at",
)
_ROW = ("client", "key", *_STORED, "created_at")


def _param(name: str, field: str) -> Param:
    return Param(name, field_of(IdempotencyRecord, field))


def _of_claim() -> Any:
    return IdempotencyRecord.objects.filter(
        client=_param("client", "client"), key=_param("key", "key")
    )


def _insert() -> InsertQuery:
    query = InsertQuery(IdempotencyRecord)
    record = IdempotencyRecord(**{name: _param(name, name) for name in _ROW})
    query.insert_values([field_of(IdempotencyRecord, name) for name in _ROW], [record])
    return query


FIND = Statement(lambda: _of_claim().values_list(*_STORED))
# The pair comes first, so rows found for many claims at once (claim_many) convert alike.
FIND_PAIR = Statement(lambda: _of_claim().values_list("client", "key", *_STORED))
INSERT = Statement(_insert)


class HeldLocks:
    """Claim locks a transaction took that outlive it (MariaDB/MySQL named locks)."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []

    def release(self) -> None:
        """After the transaction ended, committed or not. A connection that cannot release them
        is closed, and its session's locks go with it."""
        if not self.ids:
            return
        try:
            with connection.cursor() as cursor:
                dialects.current().release_claims(cursor, self.ids)
        except DatabaseError:
            connection.close()
        finally:
            self.ids.clear()


def claim(write: Write, held: HeldLocks, now: datetime) -> Outcome | None:
    """What the write's Idempotency-Key decides before it runs; None means "run it"."""
    assert write.claim is not None
    dialect = dialects.current()
    lock = lock_id(write.claim.client, write.claim.key)
    with connection.cursor() as cursor:
        [locked] = dialect.try_lock_claims(cursor, [lock])
    if not locked:
        return Outcome(Status.IN_PROGRESS, write.key)
    if dialect.claim_locks_outlive_transactions:
        held.ids.append(lock)
    rows = FIND.rows({"client": write.claim.client, "key": write.claim.key})
    return _decided(write, rows[0] if rows else None, now)


def claim_many(writes: Sequence[Write], now: datetime) -> list[Outcome | None]:
    """`claim` for writes with distinct (client, key) claims, in two statements in all
    (PostgreSQL, whose locks end with the transaction)."""
    claims = [write.claim for write in writes if write.claim is not None]
    assert len(claims) == len(writes)
    dialect = dialects.current()
    pairs = [[c.client for c in claims], [c.key for c in claims]]
    columns = ("client", "key", *_STORED)
    sql = dialect.rows_by_pair_sql(IdempotencyRecord, ("client", "key"), columns)
    with connection.cursor() as cursor:
        locked = dialect.try_lock_claims(cursor, [lock_id(c.client, c.key) for c in claims])
        # Planned afresh each time: a plan cached while the table was small kept scanning all of
        # it (a hash join over a sequential scan) as it grew.
        dialect.execute_unprepared(cursor, sql, pairs)
        rows = FIND_PAIR.compiled().convert(cursor.fetchall())
    found = {(client, key): stored for client, key, *stored in rows}
    return [
        _decided(write, found.get((c.client, c.key)), now)
        if got
        else Outcome(Status.IN_PROGRESS, write.key)
        for write, c, got in zip(writes, claims, locked, strict=True)
    ]


def _decided(write: Write, stored: Sequence[Any] | None, now: datetime) -> Outcome | None:
    """What a record found under the write's claim (fields as in _STORED) means for it."""
    assert write.claim is not None
    if stored is None:
        return None
    fingerprint, outcome, item_key, version, value, created, updated, request_id, expires = stored
    if expires <= now:  # expired: the key counts as new
        IdempotencyRecord.objects.filter(client=write.claim.client, key=write.claim.key).delete()
        return None
    if fingerprint != write.claim.fingerprint:
        return Outcome(Status.KEY_REUSED, write.key)
    status = Status(outcome)
    item = ItemRecord(item_key, value, version, created, updated) if value is not None else None
    current = version if status is Status.VERSION_MISMATCH else None
    return Outcome(status, item_key, item, current, replay_of=request_id)


def record(claim: Claim, outcome: Outcome, now: datetime) -> None:
    """Keep the outcome of a write `claim` let run, in its transaction."""
    with connection.cursor() as cursor:
        INSERT.execute(cursor, _row(claim, outcome, now))


def record_many(done: Sequence[tuple[Claim, Outcome]], now: datetime) -> None:
    """`record` for many writes, one INSERT (PostgreSQL)."""
    rows = [_row(claim, outcome, now) for claim, outcome in done]
    columns = tuple(name for name in _ROW if name != "created_at")
    sql = dialects.current().insert_many_sql(
        IdempotencyRecord, columns, ("created_at",), skip_taken=False
    )
    db = connection
    fields = {name: field_of(IdempotencyRecord, name) for name in _ROW}
    params: list[Any] = [fields["created_at"].get_db_prep_value(now, db, prepared=False)]
    for name in columns:
        field = fields[name]
        params.append([field.get_db_prep_value(row[name], db, prepared=False) for row in rows])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _row(claim: Claim, outcome: Outcome, now: datetime) -> dict[str, Any]:
    assert outcome.status in RECORDED and outcome.replay_of is None
    item = outcome.item
    return {
        "client": claim.client,
        "key": claim.key,
        "fingerprint": claim.fingerprint,
        "outcome": outcome.status.value,
        "item_key": outcome.key,
        "version": item.version if item else outcome.current_version,
        "value": item.value if item else None,
        "item_created_at": item.created_at if item else None,
        "item_updated_at": item.updated_at if item else None,
        "request_id": claim.request_id,
        "expires_at": now + timedelta(seconds=claim.ttl_seconds),
        "created_at": now,
    }
