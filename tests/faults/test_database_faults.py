"""The database goes away for real: a stopped and restarted PostgreSQL, killed backends."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from tests.conftest import Databases, PrivatePostgres, ServerFactory
from tests.faults.support import assert_clean_log

pytestmark = pytest.mark.timeout(120)

DB_TIMEOUT = 1.0
# Time the service may take beyond KV_DB_TIMEOUT to answer 503 (scheduling on a busy machine).
MARGIN = 1.5


def _every_route(
    client: httpx.Client, key: str, other: str
) -> list[tuple[str, httpx.Response, float]]:
    """One request to each /v1 route (reads, writes, conditional and idempotent), each timed."""
    idempotent = {"Idempotency-Key": uuid.uuid4().hex}
    calls = {
        "POST": lambda: client.post("/v1/items", json={"key": other, "value": 1}),
        "GET": lambda: client.get(f"/v1/items/{key}"),
        "PUT": lambda: client.put(f"/v1/items/{key}", json={"value": "lost"}),
        "PUT If-Match": lambda: client.put(
            f"/v1/items/{key}", json={"value": 3}, headers={"If-Match": '"1"'}
        ),
        "DELETE": lambda: client.delete(f"/v1/items/{key}"),
        "LIST": lambda: client.get("/v1/items", params={"limit": 10}),
        "POST Idempotency-Key": lambda: client.post(
            "/v1/items", json={"key": other, "value": 2}, headers=idempotent
        ),
    }
    results = []
    for route, send in calls.items():
        started = time.monotonic()
        response = send()
        results.append((route, response, time.monotonic() - started))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])  # a clean shutdown, and a crash
def test_postgres_stopped_then_restarted(
    server_factory: ServerFactory, private_postgres: PrivatePostgres, keyspace: str, mode: str
) -> None:
    """PostgreSQL down: every /v1 route is a prompt 503 with Retry-After; up again: it recovers."""
    server = server_factory(
        "postgres", DATABASE_URL=private_postgres.url, KV_DB_TIMEOUT=str(DB_TIMEOUT)
    )
    client = server.client()
    key, other = keyspace + "kept", keyspace + "new"
    assert client.post("/v1/items", json={"key": key, "value": {"n": 1}}).status_code == 201

    private_postgres.stop(mode)
    slowest = 0.0
    for _ in range(2):  # the second round meets a pool that has given up its connections
        for route, response, elapsed in _every_route(client, key, other):
            slowest = max(slowest, elapsed)
            assert response.status_code == 503, (route, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "service_unavailable", route
            assert int(response.headers["retry-after"]) >= 1, route
            assert elapsed < DB_TIMEOUT + MARGIN, f"{route} took {elapsed:.2f}s"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["database"] == "down"
    assert client.get("/healthz").status_code == 200  # liveness never depends on the database

    private_postgres.start()
    started = time.monotonic()
    while (status := client.get(f"/v1/items/{key}").status_code) != 200:
        assert status == 503, status
        assert time.monotonic() - started < 15, "no recovery 15 s after PostgreSQL restarted"
        time.sleep(0.2)
    recovered_after = time.monotonic() - started
    item = client.get(f"/v1/items/{key}").json()
    assert (item["value"], item["version"]) == ({"n": 1}, 1)  # intact; the failed writes left none
    assert client.get(f"/v1/items/{other}").status_code == 404
    assert client.put(f"/v1/items/{key}", json={"value": 2}).json()["version"] == 2
    with private_postgres.connect() as conn:
        row = conn.execute("SELECT value, version FROM kv_item WHERE key = %s", [key]).fetchone()
    assert row == ("2", 2)  # the value's JSON text
    # /readyz answers from a check at most a second old: within about a second it says so too.
    deadline = time.monotonic() + 3
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "/readyz still 503 3 s after the database recovered"
        time.sleep(0.1)
    print(f"\nslowest 503 {slowest:.2f}s; recovered {recovered_after:.1f}s after restart")
    assert_clean_log(server.log())


@pytest.mark.slow
def test_killed_backends_give_only_503_and_recover(
    server_factory: ServerFactory, databases: Databases, keyspace: str
) -> None:
    """pg_terminate_backend on the app's connections under load: 2xx or 503, never 500; recovery."""
    app_name = f"kvkit-fault-{uuid.uuid4().hex[:8]}"
    url = databases.url("postgres")
    database = urlparse(url).path.lstrip("/")
    server = server_factory(
        "postgres", DATABASE_URL=f"{url}?application_name={app_name}", KV_DB_TIMEOUT="1"
    )
    statuses: collections.Counter[int] = collections.Counter()
    bad: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                key = f"{keyspace}{worker}-{n}"
                responses = [
                    client.post(
                        "/v1/items",
                        json={"key": key, "value": n},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    ),
                    client.get(f"/v1/items/{key}"),
                    client.put(f"/v1/items/{key}", json={"value": -n}),
                    client.get("/v1/items", params={"prefix": keyspace, "limit": 5}),
                ]
                for response in responses:
                    statuses[response.status_code] += 1
                    # 404: the GET or PUT of a key whose POST was one of the 503s.
                    ok = response.is_success or response.status_code == 404
                    unavailable = (
                        response.status_code == 503
                        and response.json()["code"] == "service_unavailable"
                        and "retry-after" in response.headers
                    )
                    if not (ok or unavailable):
                        bad.append(f"{response.request.method} {response.status_code}")

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    terminated = 0
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as admin:
            for _ in range(12):
                time.sleep(0.4)
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = %s AND pid <> pg_backend_pid()",
                    [app_name, database],
                ).fetchall()
                terminated += sum(1 for (done,) in rows if done)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    print(f"\nterminated {terminated} backends; statuses {dict(sorted(statuses.items()))}")
    assert terminated >= 5, "the fault was not injected"
    assert not bad, bad[:10]
    assert statuses[503] >= 1 and sum(n for s, n in statuses.items() if s < 300) > 0

    # Recovery: the pool drops the dead connections; then every request succeeds again.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        deadline, streak = time.monotonic() + 15, 0
        while streak < 20:
            assert time.monotonic() < deadline, "service did not recover after the terminations"
            status = client.get(f"/v1/items/{keyspace}0-1").status_code
            streak = streak + 1 if status in (200, 404) else 0
    assert_clean_log(server.log())
