"""Translate DATABASE_URL into a Django DATABASES entry with timeouts for each backend."""

from __future__ import annotations

from typing import Any

import dj_database_url

from app.config import get_settings
from app.store import dialects

_VENDORS = {"postgresql": "postgresql", "mysql": "mysql", "sqlite3": "sqlite"}


def request_bounds() -> dialects.Bounds:
    """A serving process's: everything within KV_DB_TIMEOUT, so a sick database answers 503 in
    time instead of hanging requests."""
    timeout = get_settings().db_timeout
    return dialects.Bounds(connect=timeout, statement=timeout, lock=timeout)


def maintenance_bounds() -> dialects.Bounds:
    """migrate's and purge-idempotency's: they wait for other replicas' locks and may run long
    statements, which the request bounds would cancel."""
    settings = get_settings()
    return dialects.Bounds(
        connect=settings.db_timeout,
        statement=settings.migrate_statement_timeout or None,
        lock=settings.migrate_lock_timeout,
    )


def database_config(
    url: str | None = None, bounds: dialects.Bounds | None = None
) -> dict[str, Any]:
    """Connection settings for `url` (default DATABASE_URL), bounded by `bounds` (default the
    request bounds)."""
    settings = get_settings()
    config: dict[str, Any] = dict(
        dj_database_url.parse(url or settings.database_url.get_secret_value())
    )
    engine = config["ENGINE"].rsplit(".", 1)[-1]
    if engine not in _VENDORS:
        raise ValueError(f"DATABASE_URL: unsupported backend {config['ENGINE']}")
    if engine == "mysql":
        _use_pymysql()
    dialect = dialects.for_vendor(_VENDORS[engine])
    config["OPTIONS"] = dialect.connection_options(
        bounds or request_bounds(), config.get("OPTIONS") or {}
    )
    # Each database thread keeps its connection; it is closed when the thread idles (run_db).
    config["CONN_MAX_AGE"] = None
    config["CONN_HEALTH_CHECKS"] = False  # run_db drops broken connections after errors itself
    return config


def _use_pymysql() -> None:
    """PyMySQL stands in for mysqlclient so MariaDB needs no C client library to build."""
    import pymysql

    pymysql.install_as_MySQLdb()
