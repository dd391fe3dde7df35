"""Item statements at the store's own level, on every backend: what goes in comes back."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import transaction

from app.store import items
from app.store.records import ItemRecord

NOW = datetime(2026, 5, 17, 8, 9, 10, 123456, tzinfo=UTC)
LATER = datetime(2026, 5, 17, 8, 9, 11, 654321, tzinfo=UTC)


def test_a_created_item_reads_back_exactly(store_backend: str, keyspace: str) -> None:
    """The JSON text, version and microsecond UTC times come back as written."""
    key = keyspace + "a"
    text = '{"b":[1.0,-0.0,1e+300,18446744073709551617],"a":"\\u2028é"}'
    with transaction.atomic():
        created = items.insert_item(key, text, NOW)
    assert created == ItemRecord(key, text, 1, NOW, NOW)
    assert items.get_item(key) == created


def test_a_taken_key_is_none_and_leaves_the_transaction_usable(
    store_backend: str, keyspace: str
) -> None:
    """A create of a taken key says so without failing what else its transaction does."""
    key, other = keyspace + "taken", keyspace + "other"
    with transaction.atomic():
        assert items.insert_item(key, "1", NOW) is not None
    with transaction.atomic():
        assert items.insert_item(key, "2", LATER) is None
        assert items.insert_item(other, "3", LATER) is not None
    assert items.get_item(key) == ItemRecord(key, "1", 1, NOW, NOW)
    assert items.get_item(other) is not None


def test_update_bumps_the_version_and_honours_the_expected_one(
    store_backend: str, keyspace: str
) -> None:
    """An unconditional update always matches; a conditional one only at its version."""
    key = keyspace + "u"
    with transaction.atomic():
        items.insert_item(key, '"v1"', NOW)
        assert items.update_item(key, '"v2"', None, LATER) == ItemRecord(key, '"v2"', 2, NOW, LATER)
        assert items.update_item(key, '"stale"', 1, LATER) is None
        assert items.update_item(key, '"v3"', 2, LATER) == ItemRecord(key, '"v3"', 3, NOW, LATER)
        assert items.update_item(keyspace + "absent", "1", None, LATER) is None
    assert items.version_of(key) == 3
    assert items.version_of(keyspace + "absent") is None


def test_delete_matches_the_key_and_the_expected_version(store_backend: str, keyspace: str) -> None:
    """A stale or missing delete matches nothing; a right one removes the row."""
    key = keyspace + "d"
    with transaction.atomic():
        items.insert_item(key, "null", NOW)
        assert items.delete_item(key, 7) is False
        assert items.delete_item(key, 1) is True
        assert items.delete_item(key, None) is False
    assert items.get_item(key) is None


def test_keys_compare_and_sort_byte_wise(store_backend: str, keyspace: str) -> None:
    """ "a" and "A" are two keys; a page lists them in code-point order, "A" first."""
    keys = [keyspace + suffix for suffix in ("b", "a", "B", "A", "a.1", "a-1")]
    with transaction.atomic():
        for n, key in enumerate(keys):
            assert items.insert_item(key, str(n), NOW) is not None
    page = items.list_items(10, prefix=keyspace)
    assert [record.key for record in page] == sorted(keys)
    assert items.get_items([keyspace + "a", keyspace + "A", keyspace + "none"]).keys() == {
        keyspace + "a",
        keyspace + "A",
    }


def test_pages_follow_after_and_prefix(store_backend: str, keyspace: str) -> None:
    """Each combination of prefix, cursor and limit is its own statement, with its own rows."""
    with transaction.atomic():
        for n in range(5):
            items.insert_item(f"{keyspace}p{n}", str(n), NOW)
            items.insert_item(f"{keyspace}q{n}", str(n), NOW)
    prefixed = [r.key for r in items.list_items(3, prefix=keyspace + "p")]
    assert prefixed == [f"{keyspace}p{n}" for n in range(3)]
    after = [r.key for r in items.list_items(3, after=f"{keyspace}p3", prefix=keyspace + "p")]
    assert after == [f"{keyspace}p4"]
    longer = [r.key for r in items.list_items(7, after=f"{keyspace}p3", prefix=keyspace)]
    assert longer == [f"{keyspace}p4", *(f"{keyspace}q{n}" for n in range(5))]
    unbounded = [r.key for r in items.list_items(1000, after=f"{keyspace}q3")]
    assert unbounded[0] == f"{keyspace}q4"
