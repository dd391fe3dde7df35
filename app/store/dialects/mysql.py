"""MariaDB and MySQL (PyMySQL): error numbers, named locks, and time limits set by the server."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, InterfaceError

from app.store.dialects.base import Bounds, Dialect, ErrorKind

# Server error numbers (MariaDB's and MySQL's own, which PyMySQL passes on as args[0]).
_TIMEOUTS = {1205, 1969, 3024}  # lock wait timeout, max_statement_time, max_execution_time
_CONFLICTS = {1213, 1062}  # deadlock, duplicate entry
_DUPLICATE_ENTRY = 1062
# Client errors (can't connect, server gone, connection lost, ...) and server refusals
# (too many connections, shutting down, connection killed).
_UNAVAILABLE = {2002, 2003, 2006, 2013, 2055, 1040, 1053, 1927}


def _errno(exc: BaseException) -> int | None:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    args = getattr(cause, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _lock_name(lock: bytes) -> str:
    return "kvkit-idem-" + lock.hex()


class MySQL(Dialect):
    vendor = "mysql"
    binary_collation = "utf8mb4_bin"
    claim_locks_outlive_transactions = True

    def connection_options(self, bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
        lock = max(1, math.ceil(bounds.lock))
        statement = max(1, math.ceil(bounds.statement)) if bounds.statement is not None else 0
        # The server gives up on a statement or a lock wait first and says why; the socket
        # timeouts, a second later, catch a server that stopped answering altogether. Without a
        # statement bound (maintenance) a reply may take as long as the work: no socket timeout.
        # /*M! ... */ is run by MariaDB only: MySQL has no max_statement_time (0: no limit).
        limits = (
            f"SET SESSION innodb_lock_wait_timeout={lock}, lock_wait_timeout={lock}"
            f" /*M!, max_statement_time={statement} */"
        )
        socket_timeout = max(statement, lock) + 1 if statement else None
        return {
            **given,
            "charset": "utf8mb4",
            "connect_timeout": max(1, math.ceil(bounds.connect)),
            "read_timeout": socket_timeout,
            "write_timeout": socket_timeout,
            "isolation_level": "read committed",
            "init_command": limits,
        }

    def classify(self, exc: DatabaseError) -> ErrorKind:
        number = _errno(exc)
        if number in _TIMEOUTS:
            return ErrorKind.TIMEOUT
        if number in _CONFLICTS:
            return ErrorKind.CONFLICT
        if isinstance(exc, InterfaceError) or number in _UNAVAILABLE:
            return ErrorKind.UNAVAILABLE
        return ErrorKind.OTHER

    def is_duplicate_key(self, exc: DatabaseError) -> bool:
        return _errno(exc) == _DUPLICATE_ENTRY

    def try_lock_claims(self, cursor: Any, ids: Sequence[bytes]) -> list[bool]:
        # Named locks outlive transactions: the caller releases them once its transaction ended.
        cursor.execute(
            "SELECT " + ", ".join(["GET_LOCK(%s, 0)"] * len(ids)), [_lock_name(i) for i in ids]
        )
        return [value == 1 for value in cursor.fetchone()]

    def release_claims(self, cursor: Any, ids: Sequence[bytes]) -> None:
        if ids:
            cursor.execute(
                "SELECT " + ", ".join(["RELEASE_LOCK(%s)"] * len(ids)),
                [_lock_name(i) for i in ids],
            )

    @contextmanager
    def migration_lock(self, cursor: Any, wait: float) -> Iterator[None]:
        cursor.execute("SELECT GET_LOCK('kvkit-migrate', %s)", [max(1, math.ceil(wait))])
        if cursor.fetchone()[0] != 1:
            raise RuntimeError("timed out waiting for another migration to finish")
        try:
            yield
        finally:
            cursor.execute("SELECT RELEASE_LOCK('kvkit-migrate')")
