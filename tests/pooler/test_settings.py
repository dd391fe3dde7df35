"""The two settings for running behind a pooler, as the store reads them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import get_settings
from app.store.databases import TRANSACTION_BOUNDS, maintenance_config, serving_config

POOLER = "postgres://kvkit@pgbouncer.invalid:6432/kvkit"
DIRECT = "postgres://kvkit@postgres.invalid:5432/kvkit"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The settings read afresh from the environment this test sets."""
    for name in ("DATABASE_URL", "KV_MIGRATE_DATABASE_URL", "KV_DB_PREPARED_STATEMENTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env file
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_prepared_statements_off_makes_the_serving_connection_pooler_safe(
    environment: pytest.MonkeyPatch,
) -> None:
    """false: no `options` startup parameter, nothing prepared, bounds set per transaction."""
    environment.setenv("DATABASE_URL", POOLER)
    environment.setenv("KV_DB_PREPARED_STATEMENTS", "false")
    config = serving_config()
    assert "options" not in config["OPTIONS"]
    assert config["OPTIONS"]["prepare_threshold"] is None
    assert config[TRANSACTION_BOUNDS].statement == get_settings().db_timeout
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_maintenance_connects_to_kv_migrate_database_url_directly(
    environment: pytest.MonkeyPatch,
) -> None:
    """migrate's connection goes to KV_MIGRATE_DATABASE_URL with its startup bounds, even when
    the serving connections are pooler-safe."""
    environment.setenv("DATABASE_URL", POOLER)
    environment.setenv("KV_MIGRATE_DATABASE_URL", DIRECT)
    environment.setenv("KV_DB_PREPARED_STATEMENTS", "false")
    config = maintenance_config()
    assert (config["HOST"], config["PORT"]) == ("postgres.invalid", 5432)
    assert "lock_timeout=" in config["OPTIONS"]["options"]
    assert TRANSACTION_BOUNDS not in config


@pytest.mark.parametrize("value", [None, "", "  "])
def test_kv_migrate_database_url_unset_or_blank_is_database_url(
    environment: pytest.MonkeyPatch, value: str | None
) -> None:
    """Unset or blank (as compose and Kubernetes pass it), migrate uses DATABASE_URL."""
    environment.setenv("DATABASE_URL", DIRECT)
    if value is not None:
        environment.setenv("KV_MIGRATE_DATABASE_URL", value)
    assert get_settings().migrate_database_url.get_secret_value() == DIRECT
