"""Queries compiled to SQL once per database thread, then re-run with fresh parameters.

Building and compiling a Django queryset costs more than the query itself on the hot path (a
primary-key SELECT or UPDATE). The ORM still writes the SQL and converts the rows (JSON, time
zones); this only skips doing it again for every request. Compilation is per thread because a
compiler is bound to the connection of the thread that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, QuerySet
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

T = TypeVar("T")

_local = threading.local()


def fetch_rows(
    shape: Hashable, build: Callable[[], QuerySet[Any, Any]], params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Rows of the values_list queryset `build()`, whose SQL parameters are exactly `params`.

    `shape` names the query's structure: calls with the same shape must differ only in `params`.
    """
    sql, compiler = _select(shape, build, params)
    with compiler.connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
    return list(compiler.results_iter(results=[rows], tuple_expected=True))


def convert_rows(
    shape: Hashable,
    build: Callable[[], QuerySet[Any, Any]],
    params: Sequence[Any],
    rows: list[tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    """Raw `rows` (e.g. from RETURNING) converted as `fetch_rows` would convert its own."""
    _, compiler = _select(shape, build, params)
    return list(compiler.results_iter(results=[rows], tuple_expected=True))


def once_per_thread(shape: Hashable, build: Callable[[], T]) -> T:
    """`build()` the first time this thread asks for `shape`, the same object after that."""
    cache = _queries()
    if shape not in cache:
        cache[shape] = build()
    return cache[shape]


def _queries() -> dict[Hashable, Any]:
    queries: dict[Hashable, Any] = _local.__dict__.setdefault("queries", {})
    return queries


def same_parameters(compiled: Sequence[Any], prepared: Sequence[Any]) -> bool:
    """Whether hand-prepared parameters are what the ORM bound (adapters compare by repr)."""
    return [_comparable(p) for p in compiled] == [_comparable(p) for p in prepared]


def _comparable(param: Any) -> Any:
    return bytes(param) if isinstance(param, memoryview) else (type(param), repr(param))


def column_of(model: type[Model], name: str) -> str:
    """The database column of field `name`, for the few statements the ORM cannot write."""
    column = _concrete(model, name).column
    assert column
    return column


def _concrete(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _select(
    shape: Hashable, build: Callable[[], QuerySet[Any, Any]], params: Sequence[Any]
) -> tuple[str, Any]:
    def compile_select() -> tuple[str, Any]:
        queryset = build()
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, compiled_params = compiler.as_sql()
        if list(compiled_params) != list(params):
            raise ValueError(f"query {shape!r}: parameters {compiled_params!r} != {params!r}")
        return sql, compiler

    return once_per_thread(("select", shape), compile_select)


def execute_unprepared(cursor: Any, sql: str, params: Sequence[Any]) -> None:
    """Run `sql` on a Django cursor without making it a server-side prepared statement
    (PostgreSQL), so the server plans it for the tables as they are now."""
    with cursor.db.wrap_database_errors:
        cursor.cursor.execute(sql, params, prepare=False)


def insert_row(model: type[Model], values: dict[str, Any], shape: Hashable = None) -> None:
    """INSERT one row of `model`; the statement is compiled by the ORM once per thread.

    `shape` tells apart calls with equal field names but different SQL (an expression among
    the values).
    """
    sql, params = compiled_insert(model, [values], shape)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def compiled_insert(
    model: type[Model],
    rows: list[dict[str, Any]],
    shape: Hashable,
    *,
    on_conflict_ignore: bool = False,
) -> tuple[str, list[Any]]:
    """An INSERT of `rows` (same fields each) and its parameters, compiled once per shape.

    Parameters are prepared by the model's fields for every call; the first call of a shape
    checks that they are exactly what the ORM binds. On PostgreSQL several rows go as one array
    per column (INSERT ... SELECT * FROM unnest(...)): one short text for any number of rows,
    which the driver and the server parse and prepare once.
    """
    db = connections[DEFAULT_DB_ALIAS]
    names = tuple(rows[0])
    fields = [_concrete(model, name) for name in names]
    prepared = _prepare_rows(fields, rows, db)
    columnar = db.vendor == "postgresql" and len(rows) > 1

    def compile_insert() -> str:
        conflict = OnConflict.IGNORE if on_conflict_ignore else None
        query = InsertQuery(model, on_conflict=conflict)
        sample = rows[:1] if columnar else rows
        query.insert_values(fields, [model(**row) for row in sample])
        [(sql, compiled)] = query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
        expected = [param for row in prepared[: len(sample)] for param in row]
        if not same_parameters(compiled, expected):
            raise ValueError(f"INSERT parameters {compiled!r} != prepared {expected!r}")
        if columnar:
            return _unnest_insert(model, fields, constant, db, on_conflict_ignore)
        return str(sql)

    key = ("insert", model._meta.label, names, on_conflict_ignore)
    if not columnar:
        sql = once_per_thread((*key, len(rows), shape), compile_insert)
        return sql, [param for row in prepared for param in row]
    # A column with one value in every row (the batch's timestamps, its client) is sent once.
    columns = [list(column) for column in zip(*prepared, strict=True)]
    constant = tuple(all(p is column[0] for p in column) for column in columns)
    if all(constant):  # identical rows: unnest() still needs one array
        constant = (False, *constant[1:])
    sql = once_per_thread((*key, "columnar", constant), compile_insert)
    pairs = list(zip(columns, constant, strict=True))
    # The text names the constant columns' values first, then the arrays (see _unnest_insert).
    return sql, [c[0] for c, same in pairs if same] + [c for c, same in pairs if not same]


def _prepare_rows(
    fields: list[Field[Any, Any]], rows: list[dict[str, Any]], db: BaseDatabaseWrapper
) -> list[list[Any]]:
    """Each row's parameters; a string, integer or time repeated down a column (a batch's
    timestamp, its client) is prepared once, and the same object is used for every row. Values
    of other types are not reused: 1 and True are equal keys, but not equal JSON."""
    prepared: list[list[Any]] = [[] for _ in rows]
    for field in fields:
        done: dict[tuple[type, Any], Any] = {}
        for row, out in zip(rows, prepared, strict=True):
            value = row[field.name]
            reusable = type(value) in _REUSABLE
            param = done.get((type(value), value)) if reusable else None
            if param is None:
                param = field.get_db_prep_save(value, db)
                if reusable:
                    done[type(value), value] = param
            out.append(param)
    return prepared


_REUSABLE = (str, int, datetime)  # exact types: bool is not reused as int


def _unnest_insert(
    model: type[Model],
    fields: list[Field[Any, Any]],
    constant: tuple[bool, ...],
    db: BaseDatabaseWrapper,
    ignore: bool,
) -> str:
    """INSERT ... SELECT from one array per column, or one value for a `constant` column."""
    quote = db.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(column_of(model, field.name)) for field in fields)
    picked = ", ".join(
        f"%s::{field.db_type(db)}" if same else f"u.c{n}"
        for n, (field, same) in enumerate(zip(fields, constant, strict=True))
    )
    varying = [
        (n, field) for n, (field, same) in enumerate(zip(fields, constant, strict=True)) if not same
    ]
    # %b: arrays go in binary. In text form the driver quotes and escapes every element, which
    # cost a third of a database thread's time on idempotent POSTs (JSON and bytea elements).
    arrays = ", ".join(f"%b::{field.db_type(db)}[]" for _, field in varying)
    names = ", ".join(f"c{n}" for n, _ in varying)
    # Only quoted names and types from the model go into the text; every value is a parameter.
    sql = f"INSERT INTO {table} ({columns}) SELECT {picked} FROM unnest({arrays}) AS u ({names})"  # noqa: S608  # nosec B608
    return sql + " ON CONFLICT DO NOTHING" if ignore else sql
