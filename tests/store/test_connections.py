"""Database connections stay bounded under load and the service rides out a database outage."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES, Databases, ServerFactory
from tests.tcp_proxy import TcpProxy

_APP_NAME = "kvkit-bound-test"


def _app_connections(database: str) -> int:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [database, _APP_NAME],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_200_concurrent_requests_use_at_most_db_threads_connections(
    server_factory: ServerFactory, databases: Databases, keyspace: str
) -> None:
    """200 concurrent requests use at most KV_DB_THREADS connections; then back to idle."""
    url = databases.url("postgres") + f"?application_name={_APP_NAME}"
    server = server_factory("postgres", DATABASE_URL=url, KV_DB_THREADS="4", KV_DB_IDLE_TIMEOUT="1")
    database = urlparse(databases.url("postgres")).path.lstrip("/")
    client = server.client(limits=httpx.Limits(max_connections=200))
    assert client.get("/readyz").status_code == 200
    idle_level = _app_connections(database)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _app_connections(database))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def hit(n: int) -> int:
        key = f"{keyspace}{n}"
        created = client.post("/v1/items", json={"key": key, "value": n}).status_code
        return created if created != 201 else client.get(f"/v1/items/{key}").status_code

    try:
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(hit, range(200)))
    finally:
        stop.set()
        sampler.join()
    assert statuses == [200] * 200
    print(f"idle connections {idle_level}, peak {peak} during 200 concurrent requests")
    assert 1 <= peak <= 4, f"peak connections {peak}"
    deadline = time.monotonic() + 20
    while _app_connections(database) > idle_level and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _app_connections(database) <= idle_level


@pytest.fixture
def pg_proxy() -> TcpProxy:
    proxy = TcpProxy(POSTGRES)
    yield proxy  # type: ignore[misc]
    proxy.close()


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
def test_database_outage_is_503_within_the_timeout_and_recovers(
    server_factory: ServerFactory,
    databases: Databases,
    pg_proxy: TcpProxy,
    keyspace: str,
    outage: str,
) -> None:
    """While the database is gone every request is a fast 503 with Retry-After; then it recovers."""
    direct = databases.url("postgres")
    via_proxy = direct.replace(":5432/", f":{pg_proxy.port}/")
    server = server_factory("postgres", DATABASE_URL=via_proxy, KV_DB_TIMEOUT="1")
    client = server.client()
    key = keyspace + "k"
    assert client.post("/v1/items", json={"key": key, "value": 1}).status_code == 201

    pg_proxy.set_mode(outage)  # type: ignore[arg-type]
    for _ in range(5):
        started = time.monotonic()
        response = client.put(f"/v1/items/{key}", json={"value": 2})
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert elapsed < 1 + 1.5, f"503 took {elapsed:.2f}s"
    assert client.get("/readyz").status_code == 503

    pg_proxy.set_mode("forward")
    deadline = time.monotonic() + 15
    while client.get(f"/v1/items/{key}").status_code != 200:
        assert time.monotonic() < deadline, "service did not recover after the database returned"
        time.sleep(0.2)
    assert client.get(f"/v1/items/{key}").json()["value"] == 1  # the failed PUTs changed nothing
    assert "Traceback" not in server.log()
