"""Item queries. Plain functions run by `run_db`; they return records, never model instances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, JSONField, Value
from django.utils import timezone

from app.store.compiled import fetch_rows
from app.store.errors import ItemNotFound, KeyExists, VersionMismatch
from app.store.models import Item

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
    rows = fetch_rows("get", lambda: Item.objects.filter(pk=key).values_list(*_FIELDS), [key])
    if not rows:
        raise ItemNotFound(key)
    return ItemRecord(*rows[0])


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
        with transaction.atomic():
            Item.objects.create(
                key=key, value=_json(value), version=1, created_at=now, updated_at=now
            )
    except IntegrityError as exc:
        if not Item.objects.filter(pk=key).exists():
            raise  # another constraint failed (e.g. MariaDB's JSON_VALID check), not the key
        raise KeyExists(key) from exc
    return ItemRecord(key, value, 1, now, now)


def update_item(key: str, value: Any, expected_version: int | None = None) -> ItemRecord:
    """One conditional UPDATE bumps the version; no read-modify-write."""
    now = timezone.now()
    with transaction.atomic():
        rows = _matching(key, expected_version).update(
            value=_json(value), version=F("version") + 1, updated_at=now
        )
        if rows == 0:
            _raise_missing_or_stale(key)
        # The row is locked by our UPDATE until commit, so this read sees exactly our write.
        return get_item(key)


def delete_item(key: str, expected_version: int | None = None) -> None:
    with transaction.atomic():
        deleted, _ = _matching(key, expected_version).delete()
        if deleted == 0:
            _raise_missing_or_stale(key)


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
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _matching(key: str, expected_version: int | None) -> Any:
    query = Item.objects.filter(pk=key)
    return query if expected_version is None else query.filter(version=expected_version)


def _raise_missing_or_stale(key: str) -> None:
    current = Item.objects.filter(pk=key).values_list("version", flat=True).first()
    if current is None:
        raise ItemNotFound(key)
    raise VersionMismatch(current)
