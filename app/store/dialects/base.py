"""The interface every backend implements, with the behaviour most of them share."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from django.db import DatabaseError
from django.db.models import Model
from django.db.models.constants import OnConflict


@dataclass(frozen=True, slots=True)
class Bounds:
    """How long a connection may take, in seconds: requests bound all three by KV_DB_TIMEOUT;
    maintenance (migrate, purge) waits longer for locks and runs statements unbounded."""

    connect: float
    statement: float | None  # None: no limit
    lock: float


class ErrorKind(StrEnum):
    """How a database error is answered."""

    TIMEOUT = "timeout"  # a statement or lock wait ran out of time: 503, the connection is fine
    UNAVAILABLE = "unavailable"  # the connection failed or the server refused: 503, reconnect
    CONFLICT = "conflict"  # deadlock, serialization failure, a racing unique key: run it again
    OTHER = "other"  # a bug or a constraint: not the database's fault


def lock_id(client: str, key: str) -> bytes:
    """Eight bytes naming an Idempotency-Key's lock; equal on every process and replica."""
    return hashlib.blake2b(f"{client}\0{key}".encode(), digest_size=8).digest()


class Dialect:
    """One backend's SQL and behaviour, where it differs from the others."""

    vendor: ClassVar[str]
    # Byte-wise collation: "a" and "A" are different keys, ordering is by code point.
    binary_collation: ClassVar[str]
    # Writes of one kind sent together can be made by one statement (see app/store/writes.py).
    has_batch_statements: ClassVar[bool] = False
    # How an INSERT meets a taken primary key: IGNORE where that skips the row and nothing else
    # (the row count then tells), None where the INSERT fails with `is_duplicate_key`.
    insert_conflict: ClassVar[OnConflict | None] = None
    # Idempotency-Key locks outlive the transaction that took them (release_claims ends them).
    claim_locks_outlive_transactions: ClassVar[bool] = False

    def connection_options(self, bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
        """Django OPTIONS: those `given` in DATABASE_URL, with connecting, statements and lock
        waits bounded as `bounds` says (these win over any given)."""
        raise NotImplementedError

    def classify(self, exc: DatabaseError) -> ErrorKind:
        """What a database error means, from the driver's error code."""
        raise NotImplementedError

    def is_duplicate_key(self, exc: DatabaseError) -> bool:
        """Whether a failed INSERT met a taken key, leaving its transaction usable."""
        return False

    def update_returns_rows(self) -> bool:
        """Whether UPDATE ... RETURNING is available."""
        return False

    def try_lock_claims(self, cursor: Any, ids: Sequence[bytes]) -> list[bool]:
        """Take each Idempotency-Key lock for the current transaction without waiting.

        False for a lock another transaction holds. The default suits a backend whose write
        transactions exclude each other already (SQLite).
        """
        return [True] * len(ids)

    def release_claims(self, cursor: Any, ids: Sequence[bytes]) -> None:
        """Release locks `try_lock_claims` took, once their transaction has ended."""

    # Statements for many rows at once, where has_batch_statements says they exist.

    def insert_many_sql(
        self,
        model: type[Model],
        columns: tuple[str, ...],
        constant: tuple[str, ...],
        *,
        skip_taken: bool,
    ) -> str:
        raise NotImplementedError

    def update_many_sql(self, model: type[Model], returning: tuple[str, ...]) -> str:
        raise NotImplementedError

    def rows_by_pair_sql(
        self, model: type[Model], pair: tuple[str, str], columns: tuple[str, ...]
    ) -> str:
        raise NotImplementedError

    def execute_unprepared(self, cursor: Any, sql: str, params: Sequence[Any]) -> None:
        """Run `sql` so that the server plans it for the tables as they are now."""
        cursor.execute(sql, params)

    @contextmanager
    def migration_lock(self, cursor: Any, wait: float) -> Iterator[None]:
        """Held while migrating, so replicas that migrate at once take turns; waits at most
        `wait` seconds for another replica's migration."""
        yield
