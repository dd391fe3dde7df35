"""Writes executed together in one transaction, at the store's own level, on every backend."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from prometheus_client import REGISTRY

from app.store import items, writes
from app.store.db import DatabaseThreads
from app.store.errors import CommitUnconfirmed, DatabaseUnavailable
from app.store.records import Outcome, Status, Write, WriteKind
from tests.conftest import Databases, mariadb_connection, use_database

CREATE, UPDATE, DELETE = WriteKind.CREATE, WriteKind.UPDATE, WriteKind.DELETE


def seed(*pairs: tuple[str, str]) -> None:
    with transaction.atomic():
        for key, value in pairs:
            assert items.insert_item(key, value, datetime.now(UTC)) is not None


def statuses(outcomes: list[Outcome]) -> list[Status]:
    return [outcome.status for outcome in outcomes]


def writes_by_path(path: str) -> float:
    return REGISTRY.get_sample_value("kvkit_db_writes_total", {"path": path}) or 0.0


class Statements:
    """The SQL this thread's connection sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.sent.append(sql)
        return execute(sql, params, many, context)

    def starting(self, *verbs: str) -> list[str]:
        return [sql for sql in self.sent if sql.lstrip().upper().startswith(verbs)]


def test_each_write_gets_the_outcome_it_would_get_alone(store_backend: str, keyspace: str) -> None:
    """One transaction of every kind of write: outcomes in the order given, data as written."""
    k = keyspace
    seed((k + "u", "0"), (k + "stale", "0"), (k + "d", "0"), (k + "taken", '"old"'))
    batch = [
        Write(UPDATE, k + "u", '{"new":1}'),
        Write(UPDATE, k + "stale", '"lost"', expected_version=5),
        Write(CREATE, k + "c", "[1]"),
        Write(CREATE, k + "taken", '"again"'),
        Write(DELETE, k + "d"),
        Write(UPDATE, k + "absent", "1"),
        Write(DELETE, k + "absent", expected_version=1),
    ]
    outcomes = writes.execute(batch)
    assert statuses(outcomes) == [
        Status.UPDATED,
        Status.VERSION_MISMATCH,
        Status.CREATED,
        Status.KEY_EXISTS,
        Status.DELETED,
        Status.NOT_FOUND,
        Status.NOT_FOUND,
    ]
    assert [o.key for o in outcomes] == [w.key for w in batch]
    assert outcomes[1].current_version == 1
    assert outcomes[0].item == items.get_item(k + "u")
    assert (outcomes[0].item.value, outcomes[0].item.version) == ('{"new":1}', 2)  # type: ignore[union-attr]
    assert items.get_item(k + "stale").value == "0"  # type: ignore[union-attr]
    assert items.get_item(k + "c") == outcomes[2].item
    assert items.get_item(k + "taken").value == '"old"'  # type: ignore[union-attr]
    assert items.get_item(k + "d") is None


def test_values_equal_in_python_keep_their_own_text(store_backend: str, keyspace: str) -> None:
    """1, true and 1.0 are three values: each create keeps its own JSON text."""
    texts = ["1", "true", "1.0", '"1"', "null"]
    batch = [Write(CREATE, f"{keyspace}{n}", text) for n, text in enumerate(texts)]
    assert statuses(writes.execute(batch)) == [Status.CREATED] * len(texts)
    assert [items.get_item(w.key).value for w in batch] == texts  # type: ignore[union-attr]


def test_a_failure_rolls_back_every_write_of_the_transaction(
    failing_key: str, keyspace: str
) -> None:
    """One write the database refuses: the error propagates and no other write is kept."""
    seed((keyspace + "u", "0"))
    batch = [
        Write(CREATE, keyspace + "a", "1"),
        Write(UPDATE, keyspace + "u", "1"),
        Write(CREATE, keyspace + failing_key, "1"),
        Write(CREATE, keyspace + "z", "1"),
    ]
    with pytest.raises(DatabaseError):
        writes.execute(batch)
    assert items.get_item(keyspace + "a") is None
    assert items.get_item(keyspace + "z") is None
    assert items.get_item(keyspace + "u").version == 1  # type: ignore[union-attr]


def test_creates_and_updates_together_are_one_statement_on_postgresql(
    store_backend: str, keyspace: str
) -> None:
    """PostgreSQL makes creates (or updates) of distinct keys with one statement; the others
    make each in the one shared transaction, and every outcome is the same."""
    seed((keyspace + "taken", "0"))
    creates = [Write(CREATE, f"{keyspace}{n}", str(n)) for n in range(6)]
    creates.append(Write(CREATE, keyspace + "taken", "1"))
    updates = [Write(UPDATE, f"{keyspace}{n}", f'"{n}"') for n in range(6)]
    updates.append(Write(UPDATE, keyspace + "taken", "2", expected_version=9))
    path = "one_statement" if store_backend == "postgres" else "shared"
    before = writes_by_path(path)
    sent = Statements()
    with connection.execute_wrapper(sent):
        made = writes.execute(creates)
        changed = writes.execute(updates)
    assert statuses(made) == [Status.CREATED] * 6 + [Status.KEY_EXISTS]
    assert statuses(changed) == [Status.UPDATED] * 6 + [Status.VERSION_MISMATCH]
    assert [o.item.version for o in changed[:6]] == [2] * 6  # type: ignore[union-attr]
    assert writes_by_path(path) - before == 14
    inserts, updated = sent.starting("INSERT"), sent.starting("UPDATE")
    if store_backend == "postgres":
        assert (len(inserts), len(updated)) == (1, 1), sent.sent
    else:
        assert (len(inserts), len(updated)) == (7, 7), sent.sent


def test_a_lone_write_is_counted_alone(store_backend: str, keyspace: str) -> None:
    """kvkit_db_writes_total{path="alone"} counts the transactions that held one write."""
    before = writes_by_path("alone")
    writes.execute([Write(CREATE, keyspace + "one", "1")])
    assert writes_by_path("alone") - before == 1


def test_a_write_answered_before_its_commit_is_rolled_back(
    store_backend: str, keyspace: str
) -> None:
    """Its statements ran, but its caller had its 503 first: the COMMIT is refused, nothing kept."""
    key = keyspace + "late"
    seed((key, "0"))
    pool = DatabaseThreads(1, timeout=0.2, idle_timeout=60)
    resume, finished = threading.Event(), threading.Event()

    def paused(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("UPDATE"):
            resume.wait(30)  # the UPDATE is done, the COMMIT not yet sent
        return result

    def job() -> list[Outcome]:
        try:
            with connection.execute_wrapper(paused):
                return writes.execute([Write(UPDATE, key, "1")])
        finally:
            finished.set()

    async def scenario() -> None:
        with pytest.raises(DatabaseUnavailable):
            await pool.run(job)
        resume.set()
        await asyncio.get_running_loop().run_in_executor(None, finished.wait, 30)

    try:
        asyncio.run(scenario())
    finally:
        resume.set()
        pool.shutdown()
    record = items.get_item(key)
    assert record is not None and (record.value, record.version) == ("0", 1)


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_a_connection_lost_at_commit_is_reported_as_unconfirmed(
    databases: Databases, keyspace: str, backend: str
) -> None:
    """Killed between its last statement and its COMMIT, a write cannot know its outcome and
    says so, instead of a 503 that would claim nothing was applied."""
    use_database(databases.url(backend))
    key = keyspace + "cut"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()" if backend == "postgres" else "SELECT CONNECTION_ID()"
        )
        session = cursor.fetchone()[0]
    killer = _admin(backend, databases.url(backend))

    def kill_after_insert(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("INSERT"):
            killer(session)  # the INSERT is done; the COMMIT will find the session gone
        return result

    with pytest.raises(CommitUnconfirmed), connection.execute_wrapper(kill_after_insert):
        writes.execute([Write(CREATE, key, "1")])
    connection.close()
    assert items.get_item(key) is None  # here the server had not committed: the outcome was open


def _admin(backend: str, url: str) -> Callable[[int], None]:
    """A function that ends a database session from a connection of the test's own."""
    if backend == "postgres":

        def terminate(pid: int) -> None:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])

        return terminate

    def kill(connection_id: int) -> None:
        with mariadb_connection() as admin, admin.cursor() as cursor:
            cursor.execute("KILL CONNECTION %s", [connection_id])

    return kill
