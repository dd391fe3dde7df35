"""Querysets compiled to SQL once per database thread, then re-run with fresh parameters.

Building and compiling a Django queryset costs more than the query itself on the hot path (a
primary-key SELECT). The ORM still writes the SQL and converts the rows (JSON, time zones); this
only skips doing it again for every request. Compilation is per thread because a compiler is bound
to the connection of the thread that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from django.db.models import QuerySet

_local = threading.local()


def fetch_rows(
    shape: Hashable, build: Callable[[], QuerySet[Any, Any]], params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Rows of the values_list queryset `build()`, whose SQL parameters are exactly `params`.

    `shape` names the query's structure: calls with the same shape must differ only in `params`.
    """
    cache: dict[Hashable, Any] = _local.__dict__.setdefault("queries", {})
    entry = cache.get(shape)
    if entry is None:
        queryset = build()
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, compiled_params = compiler.as_sql()
        if list(compiled_params) != list(params):
            raise ValueError(f"query {shape!r}: parameters {compiled_params!r} != {params!r}")
        entry = cache[shape] = (sql, compiler)
    sql, compiler = entry
    with compiler.connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
    return list(compiler.results_iter(results=[rows], tuple_expected=True))
