"""Several writes committed by one transaction, each keeping its own outcome.

Every write alone costs a thread hop, BEGIN and COMMIT (a WAL flush on PostgreSQL) and, nested
in an idempotent write, savepoints; under load most of a write's cost was that, not the write.
Writes that arrive together share one transaction instead, without savepoints:

- an expected outcome (404, 409 on a version, 412, an idempotency replay or conflict) is found
  without a failed statement and raised only outside the write's own atomic block, so it never
  aborts the shared transaction;
- anything else that fails (a taken key on INSERT, a constraint, a bug) rolls the whole shared
  transaction back and raises `SharedTransactionFailed`; nothing any write did is kept, and the
  caller runs each write again on its own, where it fails or succeeds alone;
- a lost connection or a timeout is raised as is: nothing was committed, so every write of the
  transaction fails with 503 and none is half done.

Rows are written in key order, so two shared transactions never wait on each other in a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction

from app.store.errors import StoreError

_local = threading.local()


@dataclass(frozen=True, slots=True)
class Write:
    """One write to share a transaction with others."""

    key: str  # the item it writes: the order in which row locks are taken
    run: Callable[[], Any]
    # Takes a MariaDB/MySQL named lock (idempotent writes) that is released after the write's
    # own commit: on those servers the write gets a transaction of its own.
    session_locked: bool = False


class RunAlone:
    """The answer for a write that must have a transaction of its own: run it by itself."""


RUN_ALONE = RunAlone()


class SharedTransactionFailed(Exception):
    """The shared transaction was rolled back; each write must run again on its own."""


def in_shared_transaction() -> bool:
    """True while this thread runs writes that share a transaction (no savepoints, see above)."""
    return bool(getattr(_local, "shared", False))


def write_batch(writes: Sequence[Write]) -> list[Any]:
    """Each write's result, the StoreError that is its outcome, or RUN_ALONE, in the order given."""
    alone = connection.vendor == "mysql"
    shared = [n for n, write in enumerate(writes) if not (alone and write.session_locked)]
    shared.sort(key=lambda n: writes[n].key)
    answers: list[Any] = [RUN_ALONE] * len(writes)
    _local.shared = True
    try:
        with transaction.atomic():
            for n in shared:
                answers[n] = _outcome(writes[n].run)
            if transaction.get_rollback():  # a write's failure marked it; commit nothing
                raise SharedTransactionFailed("a write marked the shared transaction for rollback")
    except (OperationalError, InterfaceError):
        raise  # connection lost or timed out: nothing was committed, every write fails alike
    except SharedTransactionFailed:
        raise
    except Exception as exc:
        raise SharedTransactionFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _local.shared = False
    return answers


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except StoreError as exc:
        return exc
