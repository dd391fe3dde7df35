"""kvkit behind PgBouncer 1.18 in transaction pooling (KV_DB_PREPARED_STATEMENTS=false).

Each test runs its own PgBouncer in front of the shared PostgreSQL with fewer server connections
than the service has database threads, so consecutive transactions of one client connection run
on different server connections: nothing may be kept in a session.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.store.db import DEADLINE_MARGIN_SECONDS
from tests.conftest import (
    Databases,
    PgBouncerFactory,
    PrivatePgBouncer,
    Server,
    ServerFactory,
    empty_database,
    service_env,
)

POOL_SIZE = 2  # server connections per database; the service opens up to workers x threads
DB_TIMEOUT = 1.0
# What the service documents: a request waits for its database job at most KV_DB_TIMEOUT + 1 s.
ANSWER_WITHIN = DB_TIMEOUT + DEADLINE_MARGIN_SECONDS


def _dsn(url: str) -> str:
    """A postgres:// URL as psycopg takes it."""
    return url.replace("postgres://", "postgresql://")


def _pooled_env(bouncer: PrivatePgBouncer, direct_url: str, **env: str) -> dict[str, str]:
    return {
        "DATABASE_URL": bouncer.url(direct_url),
        "KV_MIGRATE_DATABASE_URL": direct_url,
        "KV_DB_PREPARED_STATEMENTS": "false",
        **env,
    }


@pytest.fixture
def pooled(
    pgbouncer_factory: PgBouncerFactory, databases: Databases, server_factory: ServerFactory
) -> Iterator[Any]:
    """Start the service behind a new PgBouncer: `pooled(workers=0, bouncer_options, **env)`;
    the servers stop before their PgBouncer does."""
    servers: list[Server] = []

    def start(
        *, workers: int = 0, bouncer: dict[str, Any] | None = None, **env: str
    ) -> tuple[Server, PrivatePgBouncer]:
        instance = pgbouncer_factory(pool_size=POOL_SIZE, **(bouncer or {}))
        direct = databases.url("postgres")
        server = server_factory("postgres", workers=workers, **_pooled_env(instance, direct, **env))
        servers.append(server)
        return server, instance

    yield start
    for server in servers:
        server.stop()


def _item_lifecycle(client: httpx.Client, key: str) -> list[int]:
    """Every kind of statement the API makes, for one key: the statuses in order (the value
    read back after the conditional update in place of its 200)."""
    statuses = [client.post("/v1/items", json={"key": key, "value": {"n": 1}}).status_code]
    statuses.append(client.get(f"/v1/items/{key}").status_code)
    statuses.append(client.put(f"/v1/items/{key}", json={"value": [2]}).status_code)
    conditional = client.put(f"/v1/items/{key}", json={"value": 3}, headers={"If-Match": '"2"'})
    statuses.append(conditional.status_code)
    stale = client.put(f"/v1/items/{key}", json={"value": 4}, headers={"If-Match": '"1"'})
    statuses.append(stale.status_code)
    read = client.get(f"/v1/items/{key}")
    statuses.append(read.status_code if read.status_code != 200 else read.json()["value"])
    statuses.append(client.get("/v1/items", params={"prefix": key, "limit": 5}).status_code)
    idem = {"Idempotency-Key": uuid.uuid4().hex}
    for _ in range(2):  # the second is a replay
        created = client.post("/v1/items", json={"key": key + ".i", "value": 1}, headers=idem)
        statuses.append(created.status_code)
    statuses.append(client.delete(f"/v1/items/{key}").status_code)
    statuses.append(client.get(f"/v1/items/{key}").status_code)
    return statuses


def test_crud_through_transaction_pooling_with_more_clients_than_server_connections(
    pooled: Any, keyspace: str
) -> None:
    """Two workers x four threads share two server connections: every request answers as it
    would directly, though no statement is prepared and no startup option is accepted."""
    server, bouncer = pooled(workers=2, KV_DB_THREADS="4")
    client = server.client()
    keys = [f"{keyspace}{n}" for n in range(48)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda key: _item_lifecycle(client, key), keys))
    for statuses in results:
        assert statuses == [201, 200, 200, 200, 412, 3, 200, 201, 201, 204, 404]
    pool_row = bouncer.pool(server.env["DATABASE_URL"].rsplit("/", 1)[-1])
    servers = sum(pool_row[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
    assert servers <= POOL_SIZE
    assert pool_row["cl_active"] + pool_row["cl_waiting"] > POOL_SIZE, pool_row


def test_concurrent_posts_with_one_idempotency_key_create_one_item_through_the_pooler(
    pooled: Any, keyspace: str, api_keys: list[str]
) -> None:
    """20 concurrent POSTs with one key, on transactions spread over shared server connections:
    the transaction-scoped advisory lock still lets exactly one of them write."""
    server, _ = pooled(workers=2, KV_DB_THREADS="4", KV_API_KEYS=api_keys[0])
    client = server.client(headers={"X-API-Key": api_keys[0]})
    key, idem = keyspace + "c", uuid.uuid4().hex

    def post(_: int) -> httpx.Response:
        return client.post(
            "/v1/items", json={"key": key, "value": "v"}, headers={"Idempotency-Key": idem}
        )

    for _ in range(3):  # warm every thread's connection first, so the 20 really race
        assert client.get(f"/v1/items/{keyspace}absent").status_code == 404
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    originals = [r for r in responses if r.status_code == 201]
    assert originals, [r.status_code for r in responses]
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            assert response.content == originals[0].content
        else:
            assert response.json()["code"] == "idempotency_in_progress"
    assert sum("idempotent-replayed" not in r.headers for r in originals) == 1
    assert client.get(f"/v1/items/{key}").json()["version"] == 1


def _waiting_on_locks(direct_url: str, locker: int) -> list[str]:
    """Statements of other sessions waiting for a lock in the test's database."""
    with psycopg.connect(_dsn(direct_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> %s",
            [locker],
        ).fetchall()
    return [row[0] for row in rows]


def test_a_read_stalled_behind_the_pooler_is_cancelled_by_the_database_in_time(
    pooled: Any, databases: Databases, keyspace: str
) -> None:
    """A GET waiting for a table lock answers 503 within KV_DB_TIMEOUT + 1 s, and the server has
    cancelled the statement by then, though PgBouncer drops the `options` startup parameter."""
    server, _ = pooled(bouncer={"ignore_startup_parameters": ("options",)}, KV_DB_TIMEOUT="1")
    client = server.client()
    key = keyspace + "r"
    assert client.post("/v1/items", json={"key": key, "value": 1}).status_code == 201
    direct = databases.url("postgres")
    with psycopg.connect(_dsn(direct)) as locker:
        locker.execute("LOCK TABLE kv_item IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = client.get(f"/v1/items/{key}")
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < ANSWER_WITHIN, elapsed
        time.sleep(0.2)
        assert _waiting_on_locks(direct, locker.info.backend_pid) == []
    assert client.get(f"/v1/items/{key}").status_code == 200


def test_a_write_stalled_behind_the_pooler_frees_its_database_thread_in_time(
    pooled: Any, databases: Databases, keyspace: str
) -> None:
    """A PUT waiting for a row lock answers 503 in time and its statement is cancelled, so the
    only database thread serves the next request while the lock is still held."""
    server, _ = pooled(
        bouncer={"ignore_startup_parameters": ("options",)},
        KV_DB_TIMEOUT="1",
        KV_DB_THREADS="1",
    )
    client = server.client()
    locked, free = keyspace + "locked", keyspace + "free"
    for key in (locked, free):
        assert client.post("/v1/items", json={"key": key, "value": 1}).status_code == 201
    direct = databases.url("postgres")
    with psycopg.connect(_dsn(direct)) as locker:
        locker.execute("SELECT 1 FROM kv_item WHERE key = %s FOR UPDATE", [locked])
        started = time.monotonic()
        response = client.put(f"/v1/items/{locked}", json={"value": 2})
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < ANSWER_WITHIN, elapsed
        assert client.get(f"/v1/items/{free}").status_code == 200
        assert _waiting_on_locks(direct, locker.info.backend_pid) == []
    assert client.get(f"/v1/items/{locked}").json()["version"] == 1  # the 503 was not applied


def _run_app(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", command],
        cwd=cwd,
        env=service_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_and_purge_use_kv_migrate_database_url_while_database_url_is_the_pooler(
    pgbouncer_factory: PgBouncerFactory, tmp_path: Path
) -> None:
    """migrate creates the schema through the direct URL, and its session-level lock is real
    there: held by another session, migrate waits for it and gives up; purge runs there too."""
    bouncer = pgbouncer_factory(pool_size=POOL_SIZE)
    with empty_database("postgres") as (url, connect):
        env = _pooled_env(bouncer, url)
        migrated = _run_app("migrate", tmp_path, env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        with connect() as conn:
            assert conn.execute("SELECT to_regclass('kv_item')").fetchone() == ("kv_item",)
            conn.execute("SELECT pg_advisory_lock(%s)", [zlib.crc32(b"kvkit-migrate")])
            waited = _run_app("migrate", tmp_path, {**env, "KV_MIGRATE_LOCK_TIMEOUT": "1"})
            assert waited.returncode != 0
            assert "lock timeout" in waited.stderr, waited.stderr
        purged = _run_app("purge-idempotency", tmp_path, env)
        assert purged.returncode == 0, purged.stderr
        assert purged.stdout.startswith("deleted 0 ")


def test_every_statement_carries_the_request_bounds_in_its_own_transaction(
    pgbouncer_factory: PgBouncerFactory, databases: Databases
) -> None:
    """Through the pooler, an autocommit read and a statement of an atomic block both see
    KV_DB_TIMEOUT as statement_timeout and lock_timeout, and no session keeps them."""
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    from app.store.databases import database_config
    from app.store.dialects import Bounds

    bouncer = pgbouncer_factory(pool_size=1)
    url = bouncer.url(databases.url("postgres"))
    config = database_config(url, Bounds(connect=2, statement=1.5, lock=0.25), pooled=True)
    db = DatabaseWrapper(connections.configure_settings({"default": config})["default"])
    show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
    try:
        with db.cursor() as cursor:
            cursor.execute(show)
            assert cursor.fetchone() == ("1500ms", "250ms")
        db.set_autocommit(False)
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute(show)
            assert cursor.fetchone() == ("1500ms", "250ms")
        db.commit()
        db.set_autocommit(True)
        with psycopg.connect(_dsn(url), autocommit=True) as conn:  # the same server session
            assert conn.execute(show).fetchone() == ("0", "0")
    finally:
        db.close()
