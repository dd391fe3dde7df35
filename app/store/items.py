"""Item queries. Plain functions run by `run_db`; they return records, never model instances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F, JSONField, QuerySet, Value
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from app.store.compiled import (
    column_of,
    compiled_insert,
    convert_rows,
    fetch_rows,
    insert_row,
    once_per_thread,
    same_parameters,
)
from app.store.errors import ItemNotFound, KeyExists, VersionMismatch
from app.store.models import Item
from app.store.sharing import in_shared_transaction

# Keys use only ASCII up to "~" (0x7E), so every key with a given prefix sorts below prefix+DEL.
_PREFIX_END = "\x7f"
_FIELDS = ("key", "value", "version", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """An item as stored."""

    key: str
    value: Any
    version: int
    created_at: datetime
    updated_at: datetime


def _json(value: Any) -> Any:
    # A bare None would be stored as SQL NULL; JSON null must be bound as a JSON value.
    return Value(None, output_field=JSONField()) if value is None else value


def get_item(key: str) -> ItemRecord:
    record = _find_item(key)
    if record is None:
        raise ItemNotFound(key)
    return record


def _find_item(key: str) -> ItemRecord | None:
    rows = fetch_rows("get", lambda: _get_query(key), [key])
    return ItemRecord(*rows[0]) if rows else None


def _get_query(key: str) -> QuerySet[Item, tuple[Any, ...]]:
    return Item.objects.filter(pk=key).values_list(*_FIELDS)


def get_items(keys: list[str]) -> dict[str, ItemRecord]:
    """The stored items among `keys` (unique), by key; absent keys are simply missing."""
    rows = fetch_rows(
        ("get_many", len(keys)),
        lambda: Item.objects.filter(pk__in=keys).values_list(*_FIELDS),
        keys,
    )
    return {row[0]: ItemRecord(*row) for row in rows}


def create_item(key: str, value: Any) -> ItemRecord:
    now = timezone.now()
    try:
        # Inside a shared transaction a taken key fails the whole transaction instead of a
        # savepoint: rare, and its writes then run again one by one (app/store/batch.py).
        with transaction.atomic(savepoint=not in_shared_transaction()):
            row = {"key": key, "value": _json(value), "version": 1}
            insert_row(Item, row | {"created_at": now, "updated_at": now}, shape=value is None)
    except IntegrityError as exc:
        if in_shared_transaction():
            raise
        if not Item.objects.filter(pk=key).exists():
            raise  # another constraint failed (e.g. MariaDB's JSON_VALID check), not the key
        raise KeyExists(key) from exc
    return ItemRecord(key, value, 1, now, now)


def update_item(key: str, value: Any, expected_version: int | None = None) -> ItemRecord:
    """One conditional UPDATE bumps the version; no read-modify-write.

    On PostgreSQL and SQLite it returns the row it wrote (RETURNING); MariaDB reads it back in
    the same transaction, where our UPDATE holds the row's lock until commit.
    """
    now = timezone.now()
    params = _update_params(key, value, expected_version, now)
    sql, increment, returning = once_per_thread(
        ("update", expected_version is not None),
        lambda: _compile_update(key, value, expected_version, now, params),
    )
    params[1] = increment
    # A transaction even for one statement: the COMMIT is then ours to send, so a request cut
    # while its UPDATE waits for a row lock never commits (an autocommitted UPDATE would, later).
    # No savepoint when nested: nothing here fails as an outcome, and 404/412 are raised only
    # after the block, so a shared transaction is never marked for rollback by one of them.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            rows = convert_rows("get", lambda: _get_query(key), [key], cursor.fetchall())
            record = ItemRecord(*rows[0]) if rows else None
        else:
            record = _find_item(key) if cursor.rowcount else None
    if record is None:
        raise _missing_or_stale(key, expected_version)
    return record


def _update_params(key: str, value: Any, expected_version: int | None, now: datetime) -> list[Any]:
    """The UPDATE's parameters, prepared by each field as the ORM prepares them."""
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own: no proxy per field
    fields = Item._meta
    params = [
        fields.get_field("value").get_db_prep_save(_json(value), db),
        None,  # the 1 of version + 1, bound as the ORM binds it (see _compile_update)
        fields.get_field("updated_at").get_db_prep_save(now, db),
        fields.get_field("key").get_db_prep_value(key, db),
    ]
    if expected_version is not None:
        params.append(fields.get_field("version").get_db_prep_value(expected_version, db))
    return params


def _compile_update(
    key: str, value: Any, expected_version: int | None, now: datetime, params: list[Any]
) -> tuple[str, Any, bool]:
    """The ORM's own UPDATE for this call, checked against `_update_params`, plus RETURNING."""
    matching = _matching(key, expected_version)
    query = matching.query.chain(UpdateQuery)
    query.add_update_values({"value": _json(value), "version": F("version") + 1, "updated_at": now})
    sql, compiled = query.get_compiler(matching.db).as_sql()
    increment = compiled[1]
    if not same_parameters(compiled, [*params[:1], increment, *params[2:]]):
        raise ValueError(f"UPDATE parameters {compiled!r} != prepared {params!r}")
    # SQLite gained RETURNING for INSERT and UPDATE together (3.35); MariaDB has neither for UPDATE.
    if connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert
    ):
        quote = connection.ops.quote_name
        columns = ", ".join(quote(_item_column(name)) for name in _FIELDS)
        return f"{sql} RETURNING {columns}", increment, True
    return sql, increment, False


def delete_item(key: str, expected_version: int | None = None) -> None:
    with transaction.atomic(savepoint=False):  # our COMMIT, as in update_item
        deleted, _ = _matching(key, expected_version).delete()
    if deleted == 0:
        raise _missing_or_stale(key, expected_version)


def create_many(creates: Sequence[tuple[str, Any]]) -> list[ItemRecord | KeyExists]:
    """Creates of distinct keys as one INSERT (PostgreSQL): each gets its record or KeyExists.

    ON CONFLICT DO NOTHING turns a taken key into a row not returned instead of an error, so
    one 409 does not fail the transaction the others share.
    """
    now = timezone.now()
    rows = [{"key": key, "value": _json(value), "version": 1} for key, value in creates]
    rows = [row | {"created_at": now, "updated_at": now} for row in rows]
    sql, params = compiled_insert(Item, rows, "create_many", on_conflict_ignore=True)
    key_column = connection.ops.quote_name(_item_column("key"))
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {key_column}", params)
        created = {row[0] for row in cursor.fetchall()}
    return [
        ItemRecord(key, value, 1, now, now) if key in created else KeyExists(key)
        for key, value in creates
    ]


def update_many(
    updates: Sequence[tuple[str, Any, int | None]],
) -> list[ItemRecord | ItemNotFound | VersionMismatch]:
    """Updates of distinct keys as one statement (PostgreSQL): each gets its record, or the 404
    or 412 it would get alone.

    The ORM has no UPDATE ... FROM unnest(...), so the SQL is written here, from the model's
    own table and column names; parameters are prepared by the model's fields. The rows are
    updated in the order given (a nested loop over the arrays), which the caller sorts by key.
    """
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own: no proxy per field
    now = timezone.now()
    fields = Item._meta
    key_field, value_field = fields.get_field("key"), fields.get_field("value")
    version_field = fields.get_field("version")
    params = [
        fields.get_field("updated_at").get_db_prep_save(now, db),
        [key_field.get_db_prep_value(key, db) for key, _, _ in updates],
        [value_field.get_db_prep_save(_json(value), db) for _, value, _ in updates],
        [
            None if expected is None else version_field.get_db_prep_value(expected, db)
            for _, _, expected in updates
        ],
    ]
    sql = once_per_thread("update_many", _update_many_sql)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        raw = cursor.fetchall()
    first = updates[0][0]
    rows = convert_rows("get", lambda: _get_query(first), [first], raw)
    found = {row[0]: ItemRecord(*row) for row in rows}
    results: list[ItemRecord | ItemNotFound | VersionMismatch] = []
    for key, _, expected_version in updates:
        results.append(found.get(key) or _missing_or_stale(key, expected_version))
    return results


def _update_many_sql() -> str:
    """One text for any number of rows (arrays, not VALUES), so the server prepares it once."""
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    key, value, version, updated = (
        quote(_item_column(name)) for name in ("key", "value", "version", "updated_at")
    )
    returning = ", ".join(f"t.{quote(_item_column(name))}" for name in _FIELDS)
    # Only quoted names from the model go into the text; every value is a bound parameter.
    # %b: the arrays go in binary (see _unnest_insert in app/store/compiled.py).
    return (
        f"UPDATE {table} AS t SET {value} = v.value, {version} = t.{version} + 1,"  # noqa: S608  # nosec B608
        f" {updated} = %s FROM unnest(%b::varchar[], %b::jsonb[], %b::bigint[])"
        f" AS v (key, value, expected)"
        f" WHERE t.{key} = v.key AND (v.expected IS NULL OR t.{version} = v.expected)"
        f" RETURNING {returning}"
    )


def list_items(limit: int, after: str | None = None, prefix: str | None = None) -> list[ItemRecord]:
    """Keyset page in key order: cost does not grow with depth (no OFFSET)."""
    params: list[str] = []
    query = Item.objects.all()
    if prefix:
        query = query.filter(key__gte=prefix).filter(key__lt=prefix + _PREFIX_END)
        params += [prefix, prefix + _PREFIX_END]
    if after is not None:
        query = query.filter(key__gt=after)
        params.append(after)
    shape = ("list", bool(prefix), after is not None, limit)  # LIMIT is inlined in the SQL
    rows = fetch_rows(shape, lambda: query.order_by("key").values_list(*_FIELDS)[:limit], params)
    return [ItemRecord(*row) for row in rows]


def ping() -> None:
    """Prove the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _item_column(name: str) -> str:
    return column_of(Item, name)


def _matching(key: str, expected_version: int | None) -> Any:
    query = Item.objects.filter(pk=key)
    return query if expected_version is None else query.filter(version=expected_version)


def _missing_or_stale(key: str, expected_version: int | None) -> ItemNotFound | VersionMismatch:
    """Why a write matched no row. Without If-Match only absence explains it: a row found now
    was created by a write that committed after ours looked."""
    current = Item.objects.filter(pk=key).values_list("version", flat=True).first()
    if current is None or expected_version is None:
        return ItemNotFound(key)
    return VersionMismatch(current)
