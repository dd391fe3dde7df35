"""Item statements. Plain functions run on a database thread; they return records, never models.

The writes here run inside the transaction app/store/writes.py opens; none commits by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection
from django.db.models import F
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.models.sql.subqueries import DeleteQuery

from app.store import dialects
from app.store.compiled import Param, Statement, column_of, field_of
from app.store.models import Item
from app.store.records import ItemRecord

# Keys use only ASCII up to "~" (0x7E), so every key with a given prefix sorts below prefix+DEL.
_PREFIX_END = "\x7f"
FIELDS = ("key", "value", "version", "created_at", "updated_at")


def _param(name: str | int, field: str) -> Param:
    return Param(name, field_of(Item, field))


def _matching(conditional: bool) -> Any:
    """The item named by Param "key", and with If-Match also by Param "expected"."""
    query = Item.objects.filter(pk=_param("key", "key"))
    return query.filter(version=_param("expected", "version")) if conditional else query


def _returning() -> str:
    if not dialects.current().update_returns_rows():
        return ""
    return " RETURNING " + ", ".join(column_of(Item, name) for name in FIELDS)


def _insert() -> InsertQuery:
    query = InsertQuery(Item, on_conflict=dialects.current().insert_conflict)
    now = _param("now", "created_at")
    row = Item(
        key=_param("key", "key"),
        value=_param("value", "value"),
        version=1,
        created_at=now,
        updated_at=now,
    )
    query.insert_values([field_of(Item, name) for name in FIELDS], [row])
    return query


def _update(conditional: bool) -> UpdateQuery:
    query: UpdateQuery = _matching(conditional).query.chain(UpdateQuery)
    query.add_update_values(
        {
            "value": _param("value", "value"),
            "version": F("version") + 1,
            "updated_at": _param("now", "updated_at"),
        }
    )
    return query


GET = Statement(lambda: _matching(False).values_list(*FIELDS))
GET_MANY = Statement(
    lambda count: Item.objects.filter(pk__in=[_param(n, "key") for n in range(count)]).values_list(
        *FIELDS
    )
)
VERSION = Statement(lambda: _matching(False).values_list("version"))
INSERT = Statement(_insert)
UPDATE = Statement(_update, suffix=_returning)
DELETE = Statement(lambda conditional: _matching(conditional).query.chain(DeleteQuery))


def _page(prefixed: bool, after: bool, limit: int) -> Any:
    query = Item.objects.all()
    if prefixed:
        query = query.filter(key__gte=_param("low", "key"), key__lt=_param("high", "key"))
    if after:
        query = query.filter(key__gt=_param("after", "key"))
    return query.order_by("key").values_list(*FIELDS)[:limit]  # LIMIT is part of the text


PAGE = Statement(_page)


def get_item(key: str) -> ItemRecord | None:
    rows = GET.rows({"key": key})
    return ItemRecord(*rows[0]) if rows else None


def get_items(keys: Sequence[str]) -> dict[str, ItemRecord]:
    """The stored items among `keys` (distinct), by key; absent keys are simply missing."""
    if not keys:
        return {}
    return {row[0]: ItemRecord(*row) for row in GET_MANY.rows(keys, len(keys))}


def list_items(limit: int, after: str | None = None, prefix: str | None = None) -> list[ItemRecord]:
    """Keyset page in key order: cost does not grow with depth (no OFFSET)."""
    values = {"after": after}
    if prefix:
        values |= {"low": prefix, "high": prefix + _PREFIX_END}
    rows = PAGE.rows(values, bool(prefix), after is not None, limit)
    return [ItemRecord(*row) for row in rows]


def version_of(key: str) -> int | None:
    rows = VERSION.rows({"key": key})
    return int(rows[0][0]) if rows else None


def ping() -> None:
    """Prove the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def insert_item(key: str, value: str, now: datetime) -> ItemRecord | None:
    """The new item, or None when the key is taken; never fails the transaction for that."""
    with connection.cursor() as cursor:
        try:
            INSERT.execute(cursor, {"key": key, "value": value, "now": now})
        except IntegrityError as exc:
            if not dialects.current().is_duplicate_key(exc):
                raise
            return None
        if cursor.rowcount == 0:  # skipped by ON CONFLICT DO NOTHING / INSERT OR IGNORE
            return None
    return ItemRecord(key, value, 1, now, now)


def update_item(
    key: str, value: str, expected_version: int | None, now: datetime
) -> ItemRecord | None:
    """One conditional UPDATE bumps the version (no read-modify-write); None if none matched.

    Where UPDATE has no RETURNING (MariaDB), the row is read back in the same transaction, in
    which the UPDATE holds its lock.
    """
    values = {"key": key, "value": value, "now": now, "expected": expected_version}
    with connection.cursor() as cursor:
        UPDATE.execute(cursor, values, expected_version is not None)
        if dialects.current().update_returns_rows():
            rows = GET.compiled().convert(cursor.fetchall())
            return ItemRecord(*rows[0]) if rows else None
        matched = cursor.rowcount > 0
    return get_item(key) if matched else None


def delete_item(key: str, expected_version: int | None) -> bool:
    """Whether a row matched and was deleted."""
    with connection.cursor() as cursor:
        DELETE.execute(
            cursor, {"key": key, "expected": expected_version}, expected_version is not None
        )
        return bool(cursor.rowcount)


# --------------------------------------------------------------------- many rows, one statement
# Only where the dialect has batch statements (PostgreSQL); the caller checks.


def insert_items(creates: Sequence[tuple[str, str]], now: datetime) -> set[str]:
    """Creates of distinct keys as one INSERT: the keys it created (a taken key is skipped)."""
    dialect = dialects.current()
    sql = dialect.insert_many_sql(
        Item, ("key", "value"), ("version", "created_at", "updated_at"), skip_taken=True
    )
    stamp = field_of(Item, "created_at").get_db_prep_value(now, connection, prepared=False)
    params = [1, stamp, stamp, [key for key, _ in creates], [value for _, value in creates]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def update_items(
    updates: Sequence[tuple[str, str, int | None]], now: datetime
) -> dict[str, ItemRecord]:
    """Updates of distinct keys as one statement: the items it wrote, by key."""
    dialect = dialects.current()
    sql = dialect.update_many_sql(Item, FIELDS)
    stamp = field_of(Item, "updated_at").get_db_prep_value(now, connection, prepared=False)
    keys, values, expected = (list(column) for column in zip(*updates, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, keys, values, expected])
        rows = GET.compiled().convert(cursor.fetchall())
    return {row[0]: ItemRecord(*row) for row in rows}
