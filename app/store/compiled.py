"""Statements the ORM compiles once per database thread, then runs again with fresh values.

Building and compiling a Django queryset costs more than the query itself on the hot path (a
primary-key SELECT or UPDATE). The ORM still writes the SQL and converts the rows (time zones,
each backend's types); this only skips doing it again for every request.

A `Statement` is built from its structure alone (how many keys, whether there is an If-Match),
and every value in it is a `Param`: a placeholder the ORM compiles like any expression. So the
SQL can depend on nothing but the statement and its structure, which together are the cache key:
two calls that differ only in values share one compiled text by construction, and two that
differ in structure can never share one. Compiled statements are kept per connection (and so per
database thread), because a compiler is bound to the connection it was made for; on PostgreSQL
each text then becomes a prepared statement of that connection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Expression, Field, Model, QuerySet
from django.db.models.sql import Query

Values = Mapping[str, Any] | Sequence[Any]
Built = QuerySet[Any, Any] | Query

# Where each connection keeps its compiled statements: the connection wrapper belongs to one thread
# and one DATABASES entry, and so do the compilers made for it.
_CACHE = "kvkit_statements"


class Param(Expression):
    """A value bound at each execution, by name (or position, for lists such as IN (...)),
    and prepared as the ORM prepares a value for `field` (a datetime for the driver, say)."""

    def __init__(self, name: str | int, field: Field[Any, Any]) -> None:
        super().__init__(output_field=field)
        self.name = name
        self.target = field

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, Any]:
        return "%s", [self]  # the placeholder stands in for its value until `Compiled.params`

    def __repr__(self) -> str:
        return f"Param({self.name!r})"


def field_of(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def column_of(model: type[Model], name: str) -> str:
    """The quoted column of field `name`, for the few statements the ORM cannot write."""
    column = field_of(model, name).column
    assert column
    return str(connections[DEFAULT_DB_ALIAS].ops.quote_name(column))


@dataclass(frozen=True, slots=True)
class Compiled:
    """One statement's SQL for this thread's connection, and how to bind and read it."""

    sql: str
    # Per SQL parameter: the Param's name and how to prepare its value, or (None, the constant).
    binders: tuple[tuple[str | int | None, Any], ...]
    compiler: Any  # converts result rows to Python values (SELECT only)

    def params(self, values: Values) -> list[Any]:
        """The SQL parameters for `values`, in the order the text names them."""
        return [
            prepare if name is None else prepare(values[name])  # type: ignore[index]
            for name, prepare in self.binders
        ]

    def convert(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Raw result rows as the ORM would return them from this query."""
        return list(self.compiler.results_iter(results=[rows], tuple_expected=True))


class Statement:
    """A query built by `build(*structure)` and compiled once per connection for each structure.

    `build` must leave every value as a `Param`; it receives only the structure.
    """

    def __init__(
        self, build: Callable[..., Built], *, suffix: Callable[[], str] | None = None
    ) -> None:
        self.build = build
        self.suffix = suffix  # text appended to the compiled SQL, e.g. a RETURNING clause

    def compiled(self, *structure: Hashable) -> Compiled:
        cache: dict[tuple[Statement, tuple[Hashable, ...]], Compiled]
        cache = connections[DEFAULT_DB_ALIAS].__dict__.setdefault(_CACHE, {})
        key = (self, structure)
        found = cache.get(key)
        if found is None:
            found = cache[key] = self._compile(structure)
        return found

    def _compile(self, structure: tuple[Hashable, ...]) -> Compiled:
        built = self.build(*structure)
        query = built.query if isinstance(built, QuerySet) else built
        compiler = query.get_compiler(using=DEFAULT_DB_ALIAS)
        compiled = compiler.as_sql()
        if isinstance(compiled, list):  # INSERT compilers give one (sql, params) per statement
            [compiled] = compiled
        sql, params = compiled
        db = connections[DEFAULT_DB_ALIAS]
        binders = tuple(_binder(param, db) for param in params)
        suffix = self.suffix() if self.suffix else ""
        return Compiled(f"{sql}{suffix}", binders, compiler)

    def execute(self, cursor: Any, values: Values, *structure: Hashable) -> None:
        """Run the statement on `cursor` with `values`."""
        compiled = self.compiled(*structure)
        cursor.execute(compiled.sql, compiled.params(values))

    def rows(self, values: Values, *structure: Hashable) -> list[tuple[Any, ...]]:
        """The converted rows of a SELECT."""
        compiled = self.compiled(*structure)
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(compiled.sql, compiled.params(values))
            raw = cursor.fetchall()
        return compiled.convert(raw)


def _binder(param: Any, db: BaseDatabaseWrapper) -> tuple[str | int | None, Any]:
    if not isinstance(param, Param):
        return None, param  # a constant of the statement itself, e.g. the 1 of version + 1
    field = param.target
    return param.name, lambda value: field.get_db_prep_value(value, db, prepared=False)
