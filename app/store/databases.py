"""Translate DATABASE_URL into a Django DATABASES entry with timeouts for each backend."""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from app.config import get_settings
from app.store import dialects
from app.store.dialects import postgresql
from app.store.urls import parse_database_url

_VENDORS = {"postgresql": "postgresql", "mysql": "mysql", "sqlite3": "sqlite"}
# A DATABASES entry's own key (Django ignores it): the Bounds to set inside every transaction,
# where the connection sits behind a transaction pooler (see `bound_new_connection`).
TRANSACTION_BOUNDS = "KVKIT_TRANSACTION_BOUNDS"


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
    url: str | None = None, bounds: dialects.Bounds | None = None, *, pooled: bool | None = None
) -> dict[str, Any]:
    """Connection settings for `url` (default DATABASE_URL), bounded by `bounds` (default the
    request bounds). `pooled` (default: KV_DB_PREPARED_STATEMENTS is false) makes a PostgreSQL
    connection safe behind a transaction pooler; other backends have nothing to change."""
    settings = get_settings()
    config: dict[str, Any] = dict(
        parse_database_url(url or settings.database_url.get_secret_value())
    )
    engine = config["ENGINE"].rsplit(".", 1)[-1]
    if engine not in _VENDORS:
        raise ValueError(f"DATABASE_URL: unsupported backend {config['ENGINE']}")
    if engine == "mysql":
        _use_pymysql()
    dialect = dialects.for_vendor(_VENDORS[engine])
    bounds = bounds or request_bounds()
    given = config.get("OPTIONS") or {}
    if pooled is None:
        pooled = not settings.db_prepared_statements
    if pooled and engine == "postgresql":
        config["OPTIONS"] = postgresql.pooler_safe_options(bounds, given)
        config[TRANSACTION_BOUNDS] = bounds
        # A named cursor lives in its session; the pooler may give the next FETCH another one.
        config["DISABLE_SERVER_SIDE_CURSORS"] = True
    else:
        config["OPTIONS"] = dialect.connection_options(bounds, given)
    # Each database thread keeps its connection; it is closed when the thread idles (run_db).
    config["CONN_MAX_AGE"] = None
    config["CONN_HEALTH_CHECKS"] = False  # run_db drops broken connections after errors itself
    return config


def serving_config() -> dict[str, Any]:
    """A serving process's connection: DATABASE_URL, the request bounds."""
    return database_config(bounds=request_bounds())


def maintenance_config() -> dict[str, Any]:
    """migrate's and purge-idempotency's: KV_MIGRATE_DATABASE_URL (default DATABASE_URL), always
    as a direct connection, since the migration lock belongs to a session; maintenance bounds."""
    url = get_settings().migrate_database_url.get_secret_value()
    return database_config(url, maintenance_bounds(), pooled=False)


def bound_new_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: a connection whose entry names transaction bounds gets
    them set in each of its transactions."""
    bounds = connection.settings_dict.get(TRANSACTION_BOUNDS)
    if bounds is not None:
        postgresql.bound_transactions(connection, bounds)


def _use_pymysql() -> None:
    """PyMySQL stands in for mysqlclient so MariaDB needs no C client library to build."""
    import pymysql

    pymysql.install_as_MySQLdb()
