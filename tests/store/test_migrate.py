"""`python -m app migrate` is safe when several replicas run it at the same moment."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import MARIADB, POSTGRES, mariadb_connection, require, service_env

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
