"""DATABASE_URL parsing: multi-host PostgreSQL URLs keep every host, the rest is unchanged."""

from __future__ import annotations

from typing import Any

import dj_database_url
import pytest

from app.store.databases import database_config
from app.store.urls import parse_database_url
from tests.conftest import POSTGRES, free_port, require

MULTI = "postgres://kv:s%40cret@db1:5432,db2:5433/kvkit?target_session_attrs=read-write"


@pytest.mark.parametrize(
    "url",
    [
        "postgres://kv:pw@db:5432/kvkit?sslmode=require",
        "postgresql://kv@%2Fvar%2Frun%2Fpostgresql/kvkit",
        "mysql://root@127.0.0.1:3306/test",
        "sqlite:////tmp/kv.sqlite3",
    ],
)
def test_single_host_url_parses_as_dj_database_url_does(url: str) -> None:
    """A URL with one host gives exactly what dj-database-url gives."""
    assert parse_database_url(url) == dj_database_url.parse(url)


def test_multi_host_url_keeps_every_host_and_port() -> None:
    """Both hosts and both ports reach Django as libpq's comma-separated lists."""
    config = parse_database_url(MULTI)
    assert (config["HOST"], config["PORT"]) == ("db1,db2", "5432,5433")


def test_multi_host_url_passes_target_session_attrs_as_an_option() -> None:
    """target_session_attrs (and any other query parameter) becomes a connection option."""
    config = parse_database_url(MULTI + "&load_balance_hosts=disable&connect_timeout=3")
    assert config["OPTIONS"] == {
        "target_session_attrs": "read-write",
        "load_balance_hosts": "disable",
        "connect_timeout": 3,
    }


def test_multi_host_url_reads_the_rest_like_a_single_host_url() -> None:
    """User, decoded password, database name and engine are those of the one-host URL."""
    config = parse_database_url(MULTI)
    single = dj_database_url.parse(MULTI.replace("db1:5432,db2:5433", "db1:5432"))
    for field in ("ENGINE", "USER", "PASSWORD", "NAME"):
        assert config[field] == single[field], field
    assert config["PASSWORD"] == "s@cret"


def test_host_without_port_leaves_its_port_item_empty() -> None:
    """libpq reads an empty item of the port list as the default port."""
    config = parse_database_url("postgres://kv@db1,db2:5433/kvkit")
    assert (config["HOST"], config["PORT"]) == ("db1,db2", ",5433")


def test_hosts_without_ports_give_no_port_list() -> None:
    """No port anywhere: PORT stays empty, so every host gets the default port."""
    config = parse_database_url("postgres://kv@db1,db2,db3/kvkit")
    assert (config["HOST"], config["PORT"]) == ("db1,db2,db3", "")


def test_ipv6_hosts_lose_their_brackets() -> None:
    """Bracketed IPv6 addresses are passed to libpq bare, with their ports kept apart."""
    config = parse_database_url("postgres://kv@[::1]:5432,[fd00::2]/kvkit")
    assert (config["HOST"], config["PORT"]) == ("::1,fd00::2", "5432,")


def test_socket_directories_are_percent_decoded() -> None:
    """A host list may name Unix-socket directories, percent-encoded as in a one-host URL."""
    config = parse_database_url("postgres://kv@%2Frun%2Fa,%2Frun%2Fb/kvkit")
    assert config["HOST"] == "/run/a,/run/b"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@db1:3306,db2:3306/test", "PostgreSQL only"),
        ("postgres://kv@db1:5432,db2:http/kvkit", "invalid port"),
        ("postgres://kv@db1:5432,db2:70000/kvkit", "invalid port"),
        ("postgres://kv@db1,,db2/kvkit", "empty host"),
        ("postgres://kv@[::1]x,db2/kvkit", "malformed host"),
    ],
)
def test_malformed_host_lists_are_refused(url: str, message: str) -> None:
    """A host list that libpq would misread is an error at start-up, not at the first query."""
    with pytest.raises(ValueError, match=message):
        parse_database_url(url)


def test_database_config_keeps_hosts_and_adds_the_request_bounds() -> None:
    """kvkit's own connection options join target_session_attrs; no host is dropped."""
    config = database_config(MULTI)
    assert (config["HOST"], config["PORT"]) == ("db1,db2", "5432,5433")
    assert config["OPTIONS"]["target_session_attrs"] == "read-write"
    assert "statement_timeout" in config["OPTIONS"]["options"]


def _server_port(config: dict[str, Any]) -> int:
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler({"default": config})
    connection = handler["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def test_django_connects_to_the_first_host_that_answers() -> None:
    """Through Django and psycopg, a dead first host is skipped for the live second one."""
    require(POSTGRES, "PostgreSQL")
    dead = free_port()  # nothing listens there
    url = f"postgres://postgres@127.0.0.1:{dead},127.0.0.1:{POSTGRES[1]}/postgres"
    assert _server_port(database_config(url + "?target_session_attrs=read-write")) == POSTGRES[1]
