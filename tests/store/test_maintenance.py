"""`python -m app purge-idempotency`: batches that each commit, bounds of its own, and a
recorded success that the service exports."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory, empty_database, execute, migrate, service_env

EXPIRED, LIVE, BATCH = 2500, 10, 1000

# Each deleted row waits 1 ms in a trigger, so a batch of 1000 takes about a second: longer than
# KV_DB_TIMEOUT (0.5 s here), and long enough to watch the batches commit one by one.
_SLOW_DELETE = {
    "postgres": [
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_sleep(0.001); RETURN OLD; END $$",
        "CREATE TRIGGER slow_delete BEFORE DELETE ON kv_idempotency FOR EACH ROW"
        " EXECUTE FUNCTION slow_delete()",
    ],
    "mariadb": [
        "CREATE TRIGGER slow_delete BEFORE DELETE ON kv_idempotency FOR EACH ROW DO SLEEP(0.001)"
    ],
}


def insert_records(conn: Any, backend: str) -> None:
    """LIVE records that expire in an hour, then EXPIRED ones that expired an hour ago."""
    now = datetime.now(UTC)
    rows = [
        (
            "c",
            f"k{n}",
            "f",
            "created",
            f"i{n}",
            "r",
            now,
            now + timedelta(hours=1 if n < LIVE else -1),
        )
        for n in range(LIVE + EXPIRED)
    ]
    sql = (
        "INSERT INTO kv_idempotency (client, {key}, fingerprint, outcome, item_key, request_id,"
        " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    ).format(key="key" if backend == "postgres" else "`key`")
    with conn.cursor() as cursor:
        cursor.executemany(sql, rows)


def purge(url: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "purge-idempotency"],
        cwd=cwd,
        env=service_env(DATABASE_URL=url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_purge_commits_batch_by_batch_and_outlasts_the_request_timeout(
    backend: str, tmp_path: Path
) -> None:
    """2500 expired records, deleted 1000 per transaction: another connection sees the count
    drop batch by batch (each batch's row locks end with its commit), the whole purge takes
    longer than KV_DB_TIMEOUT and succeeds, live records stay, and the success is recorded."""
    with empty_database(backend) as (url, connect), connect() as conn, connect() as watcher:
        migrate(url, tmp_path)
        insert_records(conn, backend)
        for statement in _SLOW_DELETE[backend]:
            execute(conn, statement)
        started = datetime.now(UTC)
        process = purge(url, tmp_path, KV_DB_TIMEOUT="0.5", KV_PURGE_BATCH_SIZE=str(BATCH))
        seen = set()
        while process.poll() is None:
            seen.add(execute(watcher, "SELECT count(*) FROM kv_idempotency")[0])
            time.sleep(0.05)
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0, output
        assert f"deleted {EXPIRED} expired idempotency records in 3 batches" in output
        assert {LIVE + EXPIRED - BATCH, LIVE + EXPIRED - 2 * BATCH} & seen, sorted(seen)
        assert execute(watcher, "SELECT count(*) FROM kv_idempotency") == (LIVE,)
        succeeded_at, deleted = execute(
            watcher, "SELECT succeeded_at, deleted FROM kv_maintenance_run"
        )
        assert deleted == EXPIRED
        assert succeeded_at.replace(tzinfo=UTC) >= started - timedelta(seconds=1)


def test_the_service_exports_when_the_last_purge_succeeded(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """After a purge, a server started on that database exports the time it succeeded, so an
    alert can tell when purges stop; a failed purge leaves the time as it was."""
    with empty_database("postgres") as (url, connect), connect() as conn:
        migrate(url, tmp_path)
        seeded = execute(conn, "SELECT succeeded_at FROM kv_maintenance_run")[0]
        time.sleep(1.1)
        process = purge(url, tmp_path)
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0, output
        recorded = execute(conn, "SELECT succeeded_at FROM kv_maintenance_run")[0]
        assert recorded > seeded

        execute(conn, "REVOKE ALL ON kv_idempotency FROM PUBLIC")
        execute(conn, "CREATE ROLE kvkit_no_delete LOGIN")
        try:
            execute(conn, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO kvkit_no_delete")
            refused = purge(url.replace("postgres@", "kvkit_no_delete@"), tmp_path)
            output = refused.communicate(timeout=60)[0]
            assert refused.returncode == 1 and "purge-idempotency failed" in output, output
        finally:
            execute(conn, "REASSIGN OWNED BY kvkit_no_delete TO postgres")
            execute(conn, "DROP OWNED BY kvkit_no_delete")
            execute(conn, "DROP ROLE kvkit_no_delete")
        assert execute(conn, "SELECT succeeded_at FROM kv_maintenance_run")[0] == recorded

        server = server_factory("postgres", DATABASE_URL=url)
        try:
            text = server.client().get("/metrics").text
        finally:
            server.stop()
        match = re.search(
            r"^kvkit_idempotency_purge_last_success_timestamp_seconds (\S+)$", text, re.M
        )
        assert match, text
        assert abs(float(match.group(1)) - recorded.timestamp()) < 0.001
