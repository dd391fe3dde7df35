"""Several writes committed by one transaction, each keeping its own outcome.

Every write alone costs a thread hop, BEGIN and COMMIT (a WAL flush on PostgreSQL) and, nested
in an idempotent write, savepoints; under load most of a write's cost was that, not the write.
Writes that arrive together share one transaction instead, without savepoints:

- an expected outcome (404, 412, an idempotency replay or conflict) is found without a failed
  statement and raised only outside the write's own atomic block, so it never aborts the shared
  transaction;
- anything else that fails (a taken key on a one-row INSERT, a constraint, a bug) rolls the
  whole shared transaction back and raises `SharedTransactionFailed`; nothing any write did is
  kept, and the caller runs each write again on its own, where it fails or succeeds alone;
- a lost connection or a timeout is raised as is: nothing was committed, so every write of the
  transaction fails with 503 and none is half done.

Rows are written in key order, so two shared transactions never wait on each other in a cycle;
should the server still find a deadlock, the writes run again on their own like any failure.

On PostgreSQL, a batch of plain creates (or plain updates) of distinct keys goes to the server as
one statement, and their Idempotency-Keys, if they carry them, are locked, looked up and recorded
with one statement each: per write, a statement's own cost (a round trip, the driver's and the
server's work per statement) was most of what was left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import InterfaceError, OperationalError, connection, transaction

from app.observability.metrics import DB_WRITES, labelled
from app.store import idempotency, items
from app.store.errors import ItemNotFound, KeyExists, StoreError, VersionMismatch
from app.store.sharing import sharing

PlainOutcome = items.ItemRecord | ItemNotFound | KeyExists | VersionMismatch


@dataclass(frozen=True, slots=True)
class PlainWrite:
    """What a create or update writes, so that writes of one kind can be made by one statement;
    `finish` turns the write's outcome into its answer (and, with a claim, its stored response)."""

    kind: Literal["create", "update"]
    value: Any
    expected_version: int | None
    finish: Callable[[PlainOutcome], Any]


@dataclass(frozen=True, slots=True)
class Write:
    """One write to share a transaction with others."""

    key: str  # the item it writes: the order in which row locks are taken
    run: Callable[[], Any]
    plain: PlainWrite | None = None
    # Its Idempotency-Key; `run` then executes it once. On MariaDB/MySQL that takes a named lock
    # released after the write's own commit, so there the write gets a transaction of its own.
    claim: idempotency.Claim | None = None


class RunAlone:
    """The answer for a write that must have a transaction of its own: run it by itself."""


RUN_ALONE = RunAlone()


class SharedTransactionFailed(Exception):
    """The shared transaction was rolled back; each write must run again on its own."""


def write_batch(writes: Sequence[Write]) -> list[Any]:
    """Each write's result, the StoreError that is its outcome, or RUN_ALONE, in the order given."""
    alone = connection.vendor == "mysql"
    shared = [n for n, write in enumerate(writes) if not (alone and write.claim is not None)]
    shared.sort(key=lambda n: writes[n].key)
    answers: list[Any] = [RUN_ALONE] * len(writes)
    kind = None
    try:
        with sharing(), transaction.atomic():
            together = [writes[n] for n in shared]
            kind = _one_statement_kind(together)
            if kind is None:
                outcomes = [_outcome(write.run) for write in together]
            else:
                outcomes = _all_at_once(kind, together)
            for n, outcome in zip(shared, outcomes, strict=True):
                answers[n] = outcome
            if transaction.get_rollback():  # a write's failure marked it; commit nothing
                raise SharedTransactionFailed("a write marked the shared transaction for rollback")
    except (OperationalError, InterfaceError) as exc:
        if _is_deadlock(exc):
            raise SharedTransactionFailed(str(exc).strip()) from exc
        raise  # connection lost or timed out: nothing was committed, every write fails alike
    except SharedTransactionFailed:
        raise
    except Exception as exc:
        raise SharedTransactionFailed(f"{type(exc).__name__}: {exc}") from exc
    labelled(DB_WRITES, "shared" if kind is None else "one_statement").inc(len(shared))
    return answers


def _one_statement_kind(writes: list[Write]) -> Literal["create", "update"] | None:
    """The kind shared by all `writes` if one statement can make them all, else None.

    They must be plain writes of one kind to distinct keys, and either all or none of them
    carry an Idempotency-Key (all distinct).
    """
    if connection.vendor != "postgresql" or len(writes) < 2:
        return None
    kinds = {write.plain.kind if write.plain else None for write in writes}
    if len(kinds) != 1 or None in kinds or len({write.key for write in writes}) < len(writes):
        return None
    claims = {(w.claim.client, w.claim.key) if w.claim else None for w in writes}
    if (None in claims and len(claims) > 1) or (None not in claims and len(claims) < len(writes)):
        return None
    return kinds.pop()


def _all_at_once(kind: Literal["create", "update"], writes: list[Write]) -> list[Any]:
    """What each write answers, made by one statement (plus two for Idempotency-Keys)."""
    claims = [write.claim for write in writes if write.claim is not None]
    if not claims:
        return _make(kind, writes)
    answers: list[Any] = list(idempotency.claim_many(claims))
    free = [n for n, answer in enumerate(answers) if answer is None]
    done = []
    for n, outcome in zip(free, _make(kind, [writes[n] for n in free]), strict=True):
        answers[n] = outcome
        done.append((claims[n], outcome.response))
    if done:
        idempotency.record_many(done)
    return answers


def _make(kind: Literal["create", "update"], writes: list[Write]) -> list[Any]:
    if not writes:
        return []
    plain = [(write.key, write.plain) for write in writes if write.plain is not None]
    assert len(plain) == len(writes)
    results: Sequence[PlainOutcome]
    if kind == "create":
        results = items.create_many([(key, p.value) for key, p in plain])
    else:
        results = items.update_many([(key, p.value, p.expected_version) for key, p in plain])
    return [p.finish(result) for (_, p), result in zip(plain, results, strict=True)]


def _is_deadlock(exc: Exception) -> bool:
    return "deadlock" in str(exc).lower()


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except StoreError as exc:
        return exc
