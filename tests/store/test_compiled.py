"""Statements compiled once per connection: the cache can never hand one call another's SQL."""

from __future__ import annotations

import threading

from django.db import connection, transaction

from app.store import items
from app.store.compiled import Param, Statement, field_of
from app.store.models import Item


def test_values_are_bound_at_each_call_never_baked_into_the_text(
    store_backend: str, keyspace: str
) -> None:
    """After a statement is compiled for one key, another key gets its own row."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    with transaction.atomic():
        for name in ("one", "two"):
            items.insert_item(keyspace + name, f'"{name}"', now)
    assert items.get_item(keyspace + "one").value == '"one"'  # type: ignore[union-attr]
    assert items.get_item(keyspace + "two").value == '"two"'  # type: ignore[union-attr]
    assert items.get_item(keyspace + "three") is None


def test_each_structure_is_compiled_apart(store_backend: str) -> None:
    """Calls that differ in structure get different texts; equal structures share one."""
    two, three = items.GET_MANY.compiled(2), items.GET_MANY.compiled(3)
    assert two.sql.count("%s") == 2 and three.sql.count("%s") == 3
    assert items.GET_MANY.compiled(2) is two
    assert items.UPDATE.compiled(True).sql != items.UPDATE.compiled(False).sql
    assert items.PAGE.compiled(True, False, 5).sql != items.PAGE.compiled(True, False, 6).sql


def test_a_builder_sees_only_its_structure(store_backend: str) -> None:
    """The builder is called once per structure, with the structure alone, however many calls."""
    seen: list[tuple[object, ...]] = []

    def build(*structure: object) -> object:
        seen.append(structure)
        return Item.objects.filter(pk=Param("key", field_of(Item, "key"))).values_list("key")

    statement = Statement(build)
    for key in ("a", "b", "c"):
        statement.rows({"key": key})
    statement.rows({"key": "d"}, "other")
    assert seen == [(), ("other",)]


def test_each_connection_compiles_its_own(store_backend: str) -> None:
    """A statement compiled by one thread is not reused by another thread's connection."""
    mine = items.GET.compiled()
    theirs: list[object] = []

    def compile_there() -> None:
        theirs.append(items.GET.compiled())
        connection.close()

    worker = threading.Thread(target=compile_there)
    worker.start()
    worker.join()
    assert theirs and theirs[0] is not mine
    assert theirs[0].sql == mine.sql  # type: ignore[attr-defined]


def test_parameters_are_prepared_by_their_fields(store_backend: str, keyspace: str) -> None:
    """A datetime Param is prepared for the driver as the ORM prepares it (each backend differs)."""
    from datetime import UTC, datetime

    stamp = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    with transaction.atomic():
        items.insert_item(keyspace + "t", "0", stamp)
    record = items.get_item(keyspace + "t")
    assert record is not None and record.created_at == stamp == record.updated_at
