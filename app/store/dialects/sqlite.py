"""SQLite, the embedded default: one writer at a time, so its write transaction is the lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from django.db import DatabaseError, connection
from django.db.models.constants import OnConflict

from app.store.dialects.base import Bounds, Dialect, ErrorKind

_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNAVAILABLE = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
_DUPLICATE = {sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE}


def _code(exc: BaseException) -> int | None:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    code = getattr(cause, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


class SQLite(Dialect):
    vendor = "sqlite"
    binary_collation = "BINARY"
    insert_conflict = OnConflict.IGNORE

    def connection_options(self, bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **given,
            "timeout": bounds.lock,  # how long to wait for the write lock
            # BEGIN IMMEDIATE: a write transaction holds the write lock from its first statement,
            # so two of them never deadlock upgrading read locks, and it serialises claims.
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }

    def classify(self, exc: DatabaseError) -> ErrorKind:
        code = _code(exc)
        if code is None:
            return ErrorKind.OTHER
        if code in _DUPLICATE:
            return ErrorKind.CONFLICT
        primary = code & 0xFF  # extended result codes keep the primary code in the low byte
        if primary in _BUSY:
            return ErrorKind.TIMEOUT
        return ErrorKind.UNAVAILABLE if primary in _UNAVAILABLE else ErrorKind.OTHER

    def update_returns_rows(self) -> bool:
        # SQLite gained RETURNING (3.35) for INSERT and UPDATE together.
        return bool(connection.features.can_return_columns_from_insert)
