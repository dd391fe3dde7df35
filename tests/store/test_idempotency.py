"""Idempotency-Key claims at the store's own level: once per key, and the outcome kept exactly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from app.store import items, writes
from app.store.dialects.base import lock_id
from app.store.models import IdempotencyRecord
from app.store.records import Claim, Outcome, Status, Write, WriteKind
from tests.conftest import Databases, use_database

CREATE, UPDATE, DELETE = WriteKind.CREATE, WriteKind.UPDATE, WriteKind.DELETE


def claim(key: str, fingerprint: str = "f", request_id: str = "first") -> Claim:
    return Claim("client", key, fingerprint, 3600, request_id)


def fresh(outcome: Outcome) -> Outcome:
    """The outcome as it would look fresh: a replay differs only in naming the first request."""
    return Outcome(outcome.status, outcome.key, outcome.item, outcome.current_version)


@pytest.mark.parametrize(
    "batch",
    [
        lambda k: [Write(CREATE, k + "c", '{"a":1}', claim=claim(k + "1"))],
        lambda k: [Write(UPDATE, k + "u", "[18446744073709551617]", claim=claim(k + "2"))],
        lambda k: [Write(UPDATE, k + "u", "1", expected_version=9, claim=claim(k + "3"))],
        lambda k: [Write(DELETE, k + "u", claim=claim(k + "4"))],
        lambda k: [Write(UPDATE, k + "absent", "1", claim=claim(k + "5"))],
        lambda k: [Write(CREATE, k + "u", "1", claim=claim(k + "6"))],
        lambda k: [Write(CREATE, f"{k}m{n}", str(n), claim=claim(f"{k}m{n}")) for n in range(4)],
        lambda k: [Write(UPDATE, k + "u", str(n), claim=claim(f"{k}n{n}")) for n in range(3)],
    ],
    ids=[
        "created",
        "updated",
        "version-mismatch",
        "deleted",
        "not-found",
        "key-exists",
        "creates-together",
        "updates-of-one-key",
    ],
)
def test_a_replay_is_the_recorded_outcome_and_writes_nothing(
    store_backend: str, keyspace: str, batch: object
) -> None:
    """Run again with the same claims, a batch gets its first outcomes back and changes no row."""
    with transaction.atomic():
        items.insert_item(keyspace + "u", "0", datetime.now(UTC))
    batch_writes = batch(keyspace)  # type: ignore[operator]
    first = writes.execute(batch_writes)
    after_first = items.get_items([keyspace + s for s in ("u", "c", "m0", "m1", "m2", "m3")])
    again = writes.execute(batch_writes)
    assert [fresh(outcome) for outcome in again] == first
    assert {outcome.replay_of for outcome in again} == {"first"}
    assert {outcome.replay_of for outcome in first} == {None}
    assert items.get_items(list(after_first)) == after_first


def test_the_same_claim_twice_in_one_transaction_runs_once(
    store_backend: str, keyspace: str
) -> None:
    """Two requests with one key in one batch: one write, and the other replays it."""
    same = claim(keyspace + "k")
    batch = [
        Write(CREATE, keyspace + "x", "1", claim=same),
        Write(CREATE, keyspace + "x", "1", claim=same),
    ]
    first, second = writes.execute(batch)
    assert (first.status, first.replay_of) == (Status.CREATED, None)
    assert fresh(second) == first and second.replay_of == "first"


def test_a_claim_with_another_fingerprint_is_refused(store_backend: str, keyspace: str) -> None:
    """The same key for a different request is KEY_REUSED, and that request writes nothing."""
    writes.execute([Write(CREATE, keyspace + "a", "1", claim=claim(keyspace + "k", "one"))])
    [reused] = writes.execute(
        [Write(CREATE, keyspace + "b", "1", claim=claim(keyspace + "k", "two"))]
    )
    assert reused.status is Status.KEY_REUSED
    assert items.get_item(keyspace + "b") is None


def test_an_expired_claim_counts_as_new(store_backend: str, keyspace: str) -> None:
    """Past its TTL a record is gone: the same key runs the write again."""
    key = keyspace + "k"
    writes.execute([Write(CREATE, keyspace + "a", "1", claim=claim(key))])
    IdempotencyRecord.objects.filter(client="client", key=key).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    [again] = writes.execute([Write(DELETE, keyspace + "a", claim=claim(key, "other"))])
    assert (again.status, again.replay_of) == (Status.DELETED, None)


def test_a_claim_held_by_a_running_transaction_is_in_progress(
    store_backend: str, keyspace: str
) -> None:
    """While another transaction holds the key, a write with it is IN_PROGRESS at once (SQLite,
    one writer at a time, waits for that transaction instead and then replays it)."""
    write = Write(CREATE, keyspace + "a", "1", claim=claim(keyspace + "k"))
    recorded, release = threading.Event(), threading.Event()
    held: list[Outcome] = []

    def pause_before_commit(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if "kv_idempotency" in sql and sql.lstrip().upper().startswith("INSERT"):
            recorded.set()  # the write and its record are made; the COMMIT waits
            release.wait(30)
        return result

    def first() -> None:
        try:
            with connection.execute_wrapper(pause_before_commit):
                held.extend(writes.execute([write]))
        finally:
            connection.close()

    holder = threading.Thread(target=first)
    holder.start()
    try:
        assert recorded.wait(30)
        if store_backend == "sqlite":
            threading.Timer(0.3, release.set).start()
        [second] = writes.execute([write])
    finally:
        release.set()
        holder.join(30)
    if store_backend == "sqlite":
        assert fresh(second) == held[0] and second.replay_of == "first"
    else:
        assert second.status is Status.IN_PROGRESS
    assert held[0].status is Status.CREATED
    assert items.get_item(keyspace + "a") == held[0].item


def test_named_locks_are_released_once_the_transaction_ends(
    databases: Databases, keyspace: str
) -> None:
    """MariaDB's claim locks outlive transactions: none is left held after a write."""
    use_database(databases.url("mariadb"))
    keys = [f"{keyspace}{n}" for n in range(3)]
    writes.execute([Write(CREATE, k, "1", claim=claim(k)) for k in keys])
    names = ["kvkit-idem-" + lock_id("client", k).hex() for k in keys]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * 3), names)
        assert cursor.fetchone() == (None, None, None)
    connection.close()
