"""`python -m app migrate` is safe when several replicas run it at the same moment."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from app.store.dialects.postgresql import _MIGRATION_LOCK
from tests.conftest import (
    MARIADB,
    POSTGRES,
    empty_database,
    execute,
    mariadb_connection,
    require,
    service_env,
)

_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _run_concurrently(database_url: str, cwd: Path, count: int = 4) -> list[int]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "app", "migrate"],
            cwd=cwd,
            env=service_env(DATABASE_URL=database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(count)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    codes = [process.returncode for process in processes]
    assert codes == [0] * count, "\n".join(outputs)
    return codes


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_concurrent_migrations_all_succeed(backend: str, tmp_path: Path) -> None:
    """Four simultaneous migrate runs on an empty database all exit 0 and build one schema."""
    name = f"kvkit_mig_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        require(POSTGRES, "PostgreSQL")
        with psycopg.connect(_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
    else:
        require(MARIADB, "MariaDB")
        with mariadb_connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        url = f"mysql://root@127.0.0.1:3306/{name}"
    try:
        assert _run_concurrently(url, tmp_path) == [0, 0, 0, 0]
        if backend == "postgres":
            with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}") as conn:
                applied = conn.execute(
                    "SELECT count(*) FROM django_migrations WHERE app = 'kvstore'"
                ).fetchone()
            assert applied is not None and applied[0] >= 1
    finally:
        if backend == "postgres":
            with psycopg.connect(_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            with mariadb_connection() as conn, conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def test_migration_0003_keeps_values_and_records_past_the_request_timeout(tmp_path: Path) -> None:
    """Upgrading a populated PostgreSQL database: the rewrite of kv_item takes longer than
    KV_DB_TIMEOUT and still succeeds; values keep their text and a stored response becomes an
    outcome that replays the same answer."""
    require(POSTGRES, "PostgreSQL")
    name = f"kvkit_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    to_0002 = (
        "from app.store.setup import setup_django; setup_django();"
        "from django.core.management import call_command;"
        "call_command('migrate', 'kvstore', '0002', verbosity=0)"
    )
    body = b'{"key":"k1","value":{"n":1.5},"version":1,"created_at":"2026-01-02T03:04:05.000006Z"'
    body += b',"updated_at":"2026-01-02T03:04:05.000006Z"}'
    try:
        subprocess.run(
            [sys.executable, "-c", to_0002],
            cwd=tmp_path,
            env=service_env(DATABASE_URL=url),
            check=True,
            timeout=120,
        )
        with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}") as conn:
            conn.execute(
                "INSERT INTO kv_item (key, value, version, created_at, updated_at)"
                " SELECT 'k' || n, jsonb_build_object('n', n, 'pad', repeat('x', 100)), 1,"
                " now(), now() FROM generate_series(1, 300000) AS n"
            )
            conn.execute(
                "INSERT INTO kv_idempotency (client, key, fingerprint, status, body, headers,"
                " created_at, expires_at) VALUES ('c', 'idem', 'f', 201, %s, '{}', now(),"
                " now() + interval '1 day')",
                [body],
            )
        result = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=tmp_path,
            env=service_env(DATABASE_URL=url, KV_DB_TIMEOUT="0.05"),
            capture_output=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}") as conn:
            value = conn.execute("SELECT value FROM kv_item WHERE key = 'k7'").fetchone()
            count = conn.execute("SELECT count(*) FROM kv_item").fetchone()
            record = conn.execute(
                "SELECT outcome, item_key, version, value FROM kv_idempotency WHERE key = 'idem'"
            ).fetchone()
        assert value == ('{"n": 7, "pad": "' + "x" * 100 + '"}',)
        assert count == (300000,)
        assert record == ("created", "k1", 1, '{"n":1.5}')
    finally:
        with psycopg.connect(_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------- migrate has bounds of its own


def start_migrate(url: str, cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "migrate"],
        cwd=cwd,
        env=service_env(DATABASE_URL=url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_a_migrate_waiting_8_s_for_another_replicas_lock_succeeds(
    backend: str, tmp_path: Path
) -> None:
    """Another replica holds the migration lock for 8 s, four times KV_DB_TIMEOUT: migrate
    waits for it (the request timeouts do not apply) and then migrates."""
    with empty_database(backend) as (url, connect), connect() as holder:
        if backend == "postgres":
            execute(holder, f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
        else:
            assert execute(holder, "SELECT GET_LOCK('kvkit-migrate', 0)") == (1,)
        started = time.monotonic()
        process = start_migrate(url, tmp_path, KV_DB_TIMEOUT="2")
        try:
            time.sleep(8)
            assert process.poll() is None, process.communicate()[0].decode()  # still waiting
        finally:
            if backend == "postgres":
                execute(holder, f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
            else:
                execute(holder, "SELECT RELEASE_LOCK('kvkit-migrate')")
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode == 0, output
        assert time.monotonic() - started >= 8
        assert execute(holder, "SELECT count(*) FROM kv_maintenance_run") == (1,)


# A migration step that takes 3 s: the first row migrate records in django_migrations waits
# in a trigger. The table is made beforehand, as Django would make it, so the trigger is there.
_SLOW_STEP = {
    "postgres": [
        "CREATE TABLE django_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL,"
        " name varchar(255) NOT NULL, applied timestamptz NOT NULL)",
        "CREATE SEQUENCE slow_once",
        "CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER slow_once BEFORE INSERT ON django_migrations FOR EACH ROW"
        " EXECUTE FUNCTION slow_once()",
    ],
    "mariadb": [
        "CREATE TABLE django_migrations (id bigint AUTO_INCREMENT PRIMARY KEY,"
        " app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied datetime(6) NOT NULL)",
        "CREATE TABLE slow_once (n int)",
        "CREATE TRIGGER slow_once BEFORE INSERT ON django_migrations FOR EACH ROW BEGIN"
        " IF (SELECT count(*) FROM slow_once) = 0 THEN INSERT INTO slow_once VALUES (1);"
        " DO SLEEP(3); END IF; END",
    ],
}


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_a_migration_step_slower_than_the_request_timeout_succeeds(
    backend: str, tmp_path: Path
) -> None:
    """A step that takes 3 s with KV_DB_TIMEOUT=1: migrate has no statement timeout unless
    KV_MIGRATE_STATEMENT_TIMEOUT asks for one, and then it is that one."""
    with empty_database(backend) as (url, connect), connect() as conn:
        for statement in _SLOW_STEP[backend]:
            execute(conn, statement)
        process = start_migrate(url, tmp_path, KV_DB_TIMEOUT="1")
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode == 0, output
        assert (
            execute(
                conn,
                "SELECT count(*) FROM slow_once"
                if backend == "mariadb"
                else ("SELECT last_value FROM slow_once"),
            )[0]
            >= 1
        )
        assert execute(conn, "SELECT count(*) FROM kv_item") == (0,)

    with empty_database(backend) as (url, connect), connect() as conn:
        for statement in _SLOW_STEP[backend]:
            execute(conn, statement)
        process = start_migrate(url, tmp_path, KV_DB_TIMEOUT="1", KV_MIGRATE_STATEMENT_TIMEOUT="1")
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode != 0, output
        assert "statement timeout" in output or "max_statement_time" in output, output
