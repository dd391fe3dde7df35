"""Queries compiled to SQL once per database thread, then re-run with fresh parameters.

Building and compiling a Django queryset costs more than the query itself on the hot path (a
primary-key SELECT or UPDATE). The ORM still writes the SQL and converts the rows (JSON, time
zones); this only skips doing it again for every request. Compilation is per thread because a
compiler is bound to the connection of the thread that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection
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
    """The ORM's INSERT of `rows` (same fields each) and its parameters, compiled once per shape.

    Parameters are prepared by the model's fields for every call; the first call of a shape
    checks that they are exactly what the ORM bound.
    """
    names = tuple(rows[0])
    fields = [_concrete(model, name) for name in names]
    prepared = [
        [field.get_db_prep_save(row[field.name], connection) for field in fields] for row in rows
    ]
    by_row = [param for row in prepared for param in row]
    # PostgreSQL gets several rows as one array per column (INSERT ... SELECT * FROM UNNEST).
    by_column = [list(column) for column in zip(*prepared, strict=True)]

    def compile_insert() -> tuple[str, bool]:
        query = InsertQuery(model, on_conflict=OnConflict.IGNORE if on_conflict_ignore else None)
        query.insert_values(fields, [model(**row) for row in rows])
        [(sql, compiled)] = query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
        for columnar, params in ((False, by_row), (True, by_column)):
            if _same_nested(compiled, params):
                return str(sql), columnar
        raise ValueError(f"INSERT parameters {compiled!r} != prepared {by_row!r}")

    key = ("insert", model._meta.label, names, on_conflict_ignore)
    cache = _queries()
    # The columnar text is the same for any number of rows: compile it once, not once per count.
    entry = cache.get((*key, "columnar")) if len(rows) > 1 else None
    if entry is None:
        entry = once_per_thread((*key, len(rows), shape), compile_insert)
        if entry[1] and len(rows) > 1:
            cache[(*key, "columnar")] = entry
    sql, columnar = entry
    return sql, by_column if columnar else by_row


def _same_nested(compiled: Sequence[Any], prepared: Sequence[Any]) -> bool:
    if len(compiled) != len(prepared):
        return False
    if all(isinstance(p, list) for p in (*compiled, *prepared)):
        return all(same_parameters(c, p) for c, p in zip(compiled, prepared, strict=True))
    return same_parameters(compiled, prepared)
