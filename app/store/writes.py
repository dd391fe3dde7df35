"""Writes executed together in one transaction, each with its own outcome.

Every write alone costs a thread hop, BEGIN and COMMIT (a WAL flush on PostgreSQL); under load
most of a write's cost was that, not the write. So writes that arrive together share one
transaction, and none of their expected outcomes fails it: a taken key, a missing item or a
stale version is found without a failed statement (ON CONFLICT DO NOTHING, a row count, or on
MariaDB an INSERT that fails alone), and an Idempotency-Key held elsewhere without waiting.

Anything else that fails (a deadlock, a constraint, a bug) rolls the whole transaction back and
propagates; nothing any write did is kept. A lost connection or a timeout does the same, so
every write of the transaction fails alike and none is half done; only a connection lost during
the COMMIT itself leaves the outcome unknown, and says so (CommitUnconfirmed).

Rows are written in key order, so two transactions never wait on each other in a cycle. On
PostgreSQL, creates (or updates) of distinct keys go to the server as one statement, and their
Idempotency-Keys, if they carry them, are locked, looked up and recorded with one statement
each: per write, a statement's own cost (a round trip, the driver's and the server's work) was
most of what was left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import DatabaseError, transaction
from django.utils import timezone

from app.observability.metrics import DB_WRITES, labelled
from app.store import dialects, idempotency, items
from app.store.db import claim_commit
from app.store.dialects import ErrorKind
from app.store.errors import CommitUnconfirmed
from app.store.records import ItemRecord, Outcome, Status, Write, WriteKind


def execute(writes: Sequence[Write]) -> list[Outcome]:
    """Run `writes` in one transaction; one outcome each, in the order given."""
    now = timezone.now()
    order = sorted(range(len(writes)), key=lambda n: writes[n].key)  # row locks in key order
    ordered = [writes[n] for n in order]
    held = idempotency.HeldLocks()
    committing = False
    try:
        with transaction.atomic():
            kind = _one_statement_kind(ordered)
            if kind is None:
                outcomes = [_in_context(write, held, now) for write in ordered]
            else:
                outcomes = _execute_together(kind, ordered, now)
            claim_commit()  # the caller is still waiting: from here on the COMMIT is its answer
            committing = True
    except DatabaseError as exc:
        # A connection lost during the COMMIT leaves it unknown whether the server committed.
        if committing and dialects.current().classify(exc) is ErrorKind.UNAVAILABLE:
            raise CommitUnconfirmed(f"the connection was lost during COMMIT: {exc}") from exc
        raise
    finally:
        held.release()
    path = "alone" if len(writes) == 1 else "shared" if kind is None else "one_statement"
    labelled(DB_WRITES, path).inc(len(writes))
    by_position = dict(zip(order, outcomes, strict=True))
    return [by_position[n] for n in range(len(writes))]


def _in_context(write: Write, held: idempotency.HeldLocks, now: datetime) -> Outcome:
    if write.context is None:
        return _execute_one(write, held, now)
    return write.context.run(_execute_one, write, held, now)


def _execute_one(write: Write, held: idempotency.HeldLocks, now: datetime) -> Outcome:
    if write.claim is not None:
        decided = idempotency.claim(write, held, now)
        if decided is not None:
            return decided
    outcome = _apply(write, now)
    if write.claim is not None:
        idempotency.record(write.claim, outcome, now)
    return outcome


def _apply(write: Write, now: datetime) -> Outcome:
    if write.kind is WriteKind.CREATE:
        created = items.insert_item(write.key, _value(write), now)
        if created is None:
            return Outcome(Status.KEY_EXISTS, write.key)
        return Outcome(Status.CREATED, write.key, created)
    if write.kind is WriteKind.UPDATE:
        updated = items.update_item(write.key, _value(write), write.expected_version, now)
        if updated is None:
            return _unmatched(write)
        return Outcome(Status.UPDATED, write.key, updated)
    if not items.delete_item(write.key, write.expected_version):
        return _unmatched(write)
    return Outcome(Status.DELETED, write.key)


def _value(write: Write) -> str:
    assert write.value is not None  # a create's and an update's, as Write checks
    return write.value


def _unmatched(write: Write) -> Outcome:
    """Why an update or delete matched no row. Without If-Match only absence explains it: a row
    found now was created by a write that committed after ours looked."""
    current = items.version_of(write.key)
    if current is None or write.expected_version is None:
        return Outcome(Status.NOT_FOUND, write.key)
    return Outcome(Status.VERSION_MISMATCH, write.key, current_version=current)


def _one_statement_kind(writes: Sequence[Write]) -> WriteKind | None:
    """The kind shared by all `writes` if one statement per step can make them all, else None.

    They must be creates, or updates, of distinct keys, and either all or none of them carry an
    Idempotency-Key (all distinct).
    """
    if len(writes) < 2 or not dialects.current().has_batch_statements:
        return None
    kinds = {write.kind for write in writes}
    if len(kinds) != 1 or WriteKind.DELETE in kinds:
        return None
    if len({write.key for write in writes}) < len(writes):
        return None
    claims = {(w.claim.client, w.claim.key) if w.claim else None for w in writes}
    if None in claims and len(claims) > 1:
        return None
    if None not in claims and len(claims) < len(writes):
        return None
    return kinds.pop()


def _execute_together(kind: WriteKind, writes: Sequence[Write], now: datetime) -> list[Outcome]:
    claimed = writes[0].claim is not None
    decided = idempotency.claim_many(writes, now) if claimed else [None] * len(writes)
    free = [write for write, outcome in zip(writes, decided, strict=True) if outcome is None]
    made = iter(_make(kind, free, now))
    outcomes = [next(made) if outcome is None else outcome for outcome in decided]
    if claimed and free:
        fresh = [
            (write.claim, outcome)
            for write, outcome, earlier in zip(writes, outcomes, decided, strict=True)
            if earlier is None and write.claim is not None
        ]
        idempotency.record_many(fresh, now)
    return outcomes


def _make(kind: WriteKind, writes: Sequence[Write], now: datetime) -> list[Outcome]:
    """What each write did, made by one statement."""
    if not writes:
        return []
    if kind is WriteKind.CREATE:
        pairs = [(write.key, _value(write)) for write in writes]
        created = items.insert_items(pairs, now)
        return [
            Outcome(Status.CREATED, key, ItemRecord(key, value, 1, now, now))
            if key in created
            else Outcome(Status.KEY_EXISTS, key)
            for key, value in pairs
        ]
    updates = [(write.key, _value(write), write.expected_version) for write in writes]
    written = items.update_items(updates, now)
    return [
        Outcome(Status.UPDATED, write.key, written[write.key])
        if write.key in written
        else _unmatched(write)
        for write in writes
    ]
