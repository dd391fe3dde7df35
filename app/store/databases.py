"""Translate DATABASE_URL into a Django DATABASES entry with timeouts for each backend."""

from __future__ import annotations

import math
from typing import Any

import dj_database_url

from app.config import get_settings


def database_config() -> dict[str, Any]:
    """Connection settings with bounded connect and statement times, so a sick database answers
    503 in time instead of hanging requests."""
    settings = get_settings()
    config: dict[str, Any] = dict(dj_database_url.parse(settings.database_url))
    engine = config["ENGINE"]
    timeout = settings.db_timeout
    options: dict[str, Any] = dict(config.get("OPTIONS") or {})
    if engine.endswith("postgresql"):
        options.setdefault("application_name", "kvkit")
        options.update(
            connect_timeout=max(1, math.ceil(timeout)),
            options=f"-c statement_timeout={int(timeout * 1000)}"
            f" -c lock_timeout={int(timeout * 1000)}",
            # Server-side binding, so queries a connection repeats become prepared statements.
            server_side_binding=True,
            prepare_threshold=5,
        )
    elif engine.endswith("mysql"):
        _use_pymysql()
        options.update(
            charset="utf8mb4",
            connect_timeout=max(1, math.ceil(timeout)),
            read_timeout=max(1, math.ceil(timeout)),
            write_timeout=max(1, math.ceil(timeout)),
            isolation_level="read committed",
            init_command=f"SET SESSION innodb_lock_wait_timeout={max(1, math.ceil(timeout))}",
        )
    elif engine.endswith("sqlite3"):
        options.update(
            timeout=timeout,
            transaction_mode="IMMEDIATE",
            init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        )
    config["OPTIONS"] = options
    # Each database thread keeps its connection; it is closed when the thread idles (run_db).
    config["CONN_MAX_AGE"] = None
    config["CONN_HEALTH_CHECKS"] = False  # run_db drops broken connections after errors itself
    return config


def _use_pymysql() -> None:
    """PyMySQL stands in for mysqlclient so MariaDB needs no C client library to build."""
    import pymysql

    pymysql.install_as_MySQLdb()
