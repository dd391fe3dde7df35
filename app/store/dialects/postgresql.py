"""PostgreSQL (psycopg 3): SQLSTATE codes, advisory locks, statements for many rows at once, and
connections that work behind a transaction pooler (PgBouncer `pool_mode = transaction`)."""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from django.db import DatabaseError, InterfaceError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.db.models.constants import OnConflict
from psycopg.pq import TransactionStatus

from app.store.compiled import column_of, field_of
from app.store.dialects.base import Bounds, Dialect, ErrorKind

_TIMEOUTS = {"57014", "55P03"}  # query_canceled (statement_timeout), lock_not_available
_CONFLICTS = {"40P01", "40001", "23505"}  # deadlock, serialization failure, unique violation
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
# idle_in_transaction_session_timeout, and read_only_sql_transaction: a write that reached a
# standby (a DNS name or VIP still naming the old primary after a failover) was not applied.
_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "25P03", "25006"}
# The session-level advisory lock `migrate` holds (the id every kvkit version has used).
_MIGRATION_LOCK = zlib.crc32(b"kvkit-migrate")


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    state = getattr(cause, "sqlstate", None)
    return state if isinstance(state, str) else None


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _settings(bounds: Bounds) -> tuple[tuple[str, int], ...]:
    """The server settings that bound statements and lock waits, in milliseconds (0: none)."""
    statement = _millis(bounds.statement) if bounds.statement is not None else 0
    return (("statement_timeout", statement), ("lock_timeout", _millis(bounds.lock)))


def _common_options(bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "application_name": "kvkit",
        **given,
        "connect_timeout": max(1, math.ceil(bounds.connect)),
        # Server-side binding: arrays go in binary (%b), and values never enter the SQL text.
        "server_side_binding": True,
    }


def pooler_safe_options(bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
    """Django OPTIONS for a connection through a transaction pooler (KV_DB_PREPARED_STATEMENTS
    false). Each transaction may run on another server connection, so nothing may be kept in the
    session: no named prepared statements (PgBouncer before 1.21 would send one connection's
    statement to another: "prepared statement ... does not exist"), and no `options` startup
    parameter, which PgBouncer refuses, or ignores when told to and so drops the bounds. The
    bounds are set in each transaction instead (`TransactionBounds`)."""
    return {**_common_options(bounds, given), "prepare_threshold": None}


Execute = Callable[[str, Any, bool, dict[str, Any]], Any]


class TransactionBounds:
    """A Django execute wrapper that bounds every statement by `SET LOCAL` in its transaction.

    Behind a transaction pooler a session setting (`SET`, startup `options`) stays with the
    server connection it was made on, which the next transaction may not get; `SET LOCAL` lasts
    exactly as long as the transaction, which keeps its server connection. A transaction Django
    opened (atomic) gets the settings before its first statement; a statement run in autocommit
    (reads) gets a transaction of its own: BEGIN and the settings in one round trip, then the
    statement, then COMMIT.
    """

    def __init__(self, bounds: Bounds) -> None:
        settings = "; ".join(f"SET LOCAL {name} = {value}" for name, value in _settings(bounds))
        self.set_local = settings
        self.begin = f"BEGIN; {settings}"

    def __call__(
        self, execute: Execute, sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        db: BaseDatabaseWrapper = context["connection"]
        if db.connection.info.transaction_status != TransactionStatus.IDLE:
            return execute(sql, params, many, context)  # bounded when the transaction began
        if not db.get_autocommit():  # psycopg sends BEGIN before this first statement
            execute(self.set_local, None, False, context)
            return execute(sql, params, many, context)
        execute(self.begin, None, False, context)
        try:
            result = execute(sql, params, many, context)
        except BaseException:
            with contextlib.suppress(DatabaseError):  # a lost connection is dropped after the job
                _end_transaction(db, "ROLLBACK")
            raise
        _end_transaction(db, "COMMIT")  # the rows stay with the statement's own cursor
        return result


def _end_transaction(db: BaseDatabaseWrapper, command: str) -> None:
    """COMMIT or ROLLBACK on a cursor of its own, so the statement's cursor keeps its rows."""
    with db.cursor() as cursor:
        cursor.execute(command)


def bound_transactions(db: BaseDatabaseWrapper, bounds: Bounds) -> None:
    """Have every statement of connection `db` bounded by `bounds` in its transaction (once)."""
    if not any(isinstance(wrapper, TransactionBounds) for wrapper in db.execute_wrappers):
        db.execute_wrappers.append(TransactionBounds(bounds))


def _number(lock: bytes) -> int:
    return int.from_bytes(lock, "big", signed=True)


class PostgreSQL(Dialect):
    vendor = "postgresql"
    binary_collation = "C"
    has_batch_statements = True
    insert_conflict = OnConflict.IGNORE

    def connection_options(self, bounds: Bounds, given: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **_common_options(bounds, given),
            "options": "-c " + " -c ".join(f"{name}={value}" for name, value in _settings(bounds)),
            # Queries a connection repeats become prepared statements.
            "prepare_threshold": 5,
        }

    def classify(self, exc: DatabaseError) -> ErrorKind:
        state = _sqlstate(exc)
        if state in _TIMEOUTS:
            return ErrorKind.TIMEOUT
        if state in _CONFLICTS:
            return ErrorKind.CONFLICT
        # No SQLSTATE: the driver lost or never had a connection (class 08 when it has one).
        if isinstance(exc, InterfaceError) or state is None or state.startswith("08"):
            return ErrorKind.UNAVAILABLE
        return ErrorKind.UNAVAILABLE if state in _UNAVAILABLE else ErrorKind.OTHER

    def update_returns_rows(self) -> bool:
        return True

    def try_lock_claims(self, cursor: Any, ids: Sequence[bytes]) -> list[bool]:
        # Transaction-scoped: released by the COMMIT or ROLLBACK, never held past either.
        # An array, not a placeholder per lock: one text for any number, prepared once.
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(n) FROM unnest(%b::bigint[])"
            " WITH ORDINALITY AS l (n, position) ORDER BY position",
            [[_number(lock) for lock in ids]],
        )
        return [bool(row[0]) for row in cursor.fetchall()]

    @contextmanager
    def migration_lock(self, cursor: Any, wait: float) -> Iterator[None]:
        # lock_timeout bounds the wait for an advisory lock like any other; this connection's
        # own (the maintenance bound) may differ from `wait`, so it is set for this wait alone.
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{_millis(wait)}ms"])
        cursor.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])
        cursor.execute("RESET lock_timeout")
        try:
            yield
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])

    # ----------------------------------------------------------------- many rows, one statement

    def execute_unprepared(self, cursor: Any, sql: str, params: Sequence[Any]) -> None:
        """Run `sql` without making it a prepared statement, so the server plans it for the
        tables as they are now."""
        with cursor.db.wrap_database_errors:
            cursor.cursor.execute(sql, params, prepare=False)

    def insert_many_sql(
        self,
        model: type[Model],
        columns: tuple[str, ...],
        constant: tuple[str, ...],
        *,
        skip_taken: bool,
    ) -> str:
        """INSERT ... SELECT FROM unnest(arrays): `columns` are field names bound as one array
        each, `constant` field names bound once for every row. Parameters: the constants, then
        the arrays. With `skip_taken`, a row whose key is taken is skipped (ON CONFLICT DO
        NOTHING), and the statement returns the first column of the rows it inserted.
        """
        return _insert_many_sql(model, columns, constant, skip_taken)

    def update_many_sql(self, model: type[Model], returning: tuple[str, ...]) -> str:
        """UPDATE of rows given as arrays of (key, value, expected version or NULL).

        Parameters: updated_at, then the key, value and expected-version arrays.
        """
        return _update_many_sql(model, returning)

    def rows_by_pair_sql(
        self, model: type[Model], pair: tuple[str, str], columns: tuple[str, ...]
    ) -> str:
        """SELECT `columns` of the rows whose two `pair` fields match two arrays, element-wise."""
        return _rows_by_pair_sql(model, pair, columns)


def _db_type(model: type[Model], name: str) -> str:
    return str(field_of(model, name).db_type(connection))


# The texts below hold only quoted names and types taken from the model; every value is a bound
# parameter. %b sends an array in binary: in text form the driver quotes and escapes every
# element. One text serves any number of rows, so the server prepares each once.


@cache
def _insert_many_sql(
    model: type[Model], columns: tuple[str, ...], constant: tuple[str, ...], skip_taken: bool
) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    targets = ", ".join(column_of(model, name) for name in (*constant, *columns))
    picked = [f"%s::{_db_type(model, name)}" for name in constant]
    picked += [f"u.c{n}" for n in range(len(columns))]
    arrays = ", ".join(f"%b::{_db_type(model, name)}[]" for name in columns)
    names = ", ".join(f"c{n}" for n in range(len(columns)))
    sql = (
        f"INSERT INTO {table} ({targets}) SELECT {', '.join(picked)}"  # noqa: S608  # nosec B608
        f" FROM unnest({arrays}) AS u ({names})"
    )
    if skip_taken:
        sql += f" ON CONFLICT DO NOTHING RETURNING {column_of(model, columns[0])}"
    return sql


@cache
def _update_many_sql(model: type[Model], returning: tuple[str, ...]) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    key, value, version, updated = (
        column_of(model, name) for name in ("key", "value", "version", "updated_at")
    )
    types = [_db_type(model, name) for name in ("key", "value", "version")]
    result = ", ".join(f"t.{column_of(model, name)}" for name in returning)
    # The rows are updated in the order of the arrays (a nested loop), which callers sort by key.
    return (
        f"UPDATE {table} AS t SET {value} = v.value, {version} = t.{version} + 1,"  # noqa: S608  # nosec B608
        f" {updated} = %s FROM unnest(%b::{types[0]}[], %b::{types[1]}[], %b::{types[2]}[])"
        f" AS v (key, value, expected)"
        f" WHERE t.{key} = v.key AND (v.expected IS NULL OR t.{version} = v.expected)"
        f" RETURNING {result}"
    )


@cache
def _rows_by_pair_sql(model: type[Model], pair: tuple[str, str], columns: tuple[str, ...]) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    first, second = (column_of(model, name) for name in pair)
    types = [_db_type(model, name) for name in pair]
    selected = ", ".join(f"r.{column_of(model, name)}" for name in columns)
    return (
        f"SELECT {selected} FROM unnest(%b::{types[0]}[], %b::{types[1]}[])"  # noqa: S608  # nosec B608
        f" AS p (a, b) JOIN {table} AS r ON r.{first} = p.a AND r.{second} = p.b"
    )
