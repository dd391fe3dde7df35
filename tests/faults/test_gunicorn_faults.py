"""gunicorn under signals: graceful SIGTERM with requests in flight, and a SIGKILLed worker."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import Databases, Server, ServerFactory
from tests.faults.support import assert_clean_log, kill_one_worker, wait_for_workers
from tests.faults.workload import Writers, audit, counter_values, stored_items

pytestmark = pytest.mark.timeout(120)

IN_FLIGHT = 6


def _app_backends(url: str, app_name: str, condition: str = "true") -> int:
    database = urlparse(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"  # condition: a constant of this module
            f" WHERE datname = %s AND application_name = %s AND ({condition})",
            [database, app_name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _waiting_on_locks(url: str, app_name: str) -> int:
    return _app_backends(url, app_name, "wait_event_type = 'Lock'")


def _put_in_flight(
    server_url: str, keys: list[str], results: dict[str, object], url: str, app_name: str
) -> list[threading.Thread]:
    """One PUT per key, each on a connection of its own; results[key] = response or error.

    Each PUT is started once the one before waits on our row lock, so no two arrive together
    and share a transaction: every PUT then waits in a database session of its own.
    """

    def put(key: str) -> None:
        try:
            results[key] = httpx.put(
                f"{server_url}/v1/items/{key}", json={"value": "after"}, timeout=30
            )
        except httpx.HTTPError as exc:
            results[key] = exc

    threads = []
    deadline = time.monotonic() + 15
    for n, key in enumerate(keys, start=1):
        threads.append(threading.Thread(target=put, args=(key,)))
        threads[-1].start()
        while _waiting_on_locks(url, app_name) < n:
            assert time.monotonic() < deadline, "the PUTs did not reach the database"
            time.sleep(0.02)
    return threads


def _blocked_server(
    server_factory: ServerFactory, databases: Databases, grace: int
) -> tuple[Server, str, str]:
    """gunicorn with 2 workers whose PUTs can be held in the database by a row lock."""
    app_name = f"kvkit-grace-{uuid.uuid4().hex[:8]}"
    url = databases.url("postgres")
    server = server_factory(
        "postgres",
        workers=2,
        DATABASE_URL=f"{url}?application_name={app_name}",
        GUNICORN_GRACEFUL_TIMEOUT=str(grace),
        KV_DB_TIMEOUT="20",  # lock waits below must not turn into 503s
        KV_DB_THREADS=str(IN_FLIGHT),  # so all requests can wait even on one worker
    )
    return server, url, app_name


@pytest.mark.slow
def test_sigterm_lets_in_flight_requests_finish(
    server_factory: ServerFactory, databases: Databases, keyspace: str
) -> None:
    """SIGTERM to the master: requests in flight complete normally; it exits within the grace."""
    grace = 5
    server, url, app_name = _blocked_server(server_factory, databases, grace)
    keys = [f"{keyspace}{n}" for n in range(IN_FLIGHT)]
    with server.client() as client:
        for key in keys:
            assert client.post("/v1/items", json={"key": key, "value": "before"}).status_code == 201
    results: dict[str, object] = {}
    # Our transaction holds the rows, so every PUT stays in flight inside the service.
    with psycopg.connect(url, connect_timeout=10) as locker:
        locker.execute("SELECT key FROM kv_item WHERE key = ANY(%s) FOR UPDATE", [keys])
        threads = _put_in_flight(server.url, keys, results, url, app_name)
        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert server.process.poll() is None, "the master did not wait for requests in flight"
        locker.commit()  # let the requests finish, 1.5 s into the shutdown
    for thread in threads:
        thread.join(15)
    returncode = server.process.wait(grace + 5)
    exited_after = time.monotonic() - terminated_at

    print(f"\nmaster exited {exited_after:.2f}s after SIGTERM with {returncode}")
    for key in keys:
        response = results[key]
        assert isinstance(response, httpx.Response), f"{key}: {response!r}"
        assert response.status_code == 200, (key, response.status_code, response.text)
        assert response.json()["version"] == 2
    assert returncode == 0
    assert exited_after < grace + 2, f"master took {exited_after:.1f}s (graceful timeout {grace})"
    assert {version for _, version in stored_items(url, keyspace).values()} == {2}
    assert_clean_log(server.log())


@pytest.mark.slow
def test_sigterm_never_waits_past_the_graceful_timeout(
    server_factory: ServerFactory, databases: Databases, keyspace: str
) -> None:
    """Requests stuck past GUNICORN_GRACEFUL_TIMEOUT are cut; the master exits on time, no write."""
    grace = 3
    server, url, app_name = _blocked_server(server_factory, databases, grace)
    keys = [f"{keyspace}{n}" for n in range(2)]
    with server.client() as client:
        for key in keys:
            assert client.post("/v1/items", json={"key": key, "value": "before"}).status_code == 201
    results: dict[str, object] = {}
    with psycopg.connect(url, connect_timeout=10) as locker:
        locker.execute("SELECT key FROM kv_item WHERE key = ANY(%s) FOR UPDATE", [keys])
        threads = _put_in_flight(server.url, keys, results, url, app_name)
        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(grace + 5)
        exited_after = time.monotonic() - terminated_at
        locker.commit()
    # The killed workers' backends notice their dead clients once they get the lock, roll back
    # and end; wait for that before looking at the rows.
    deadline = time.monotonic() + 10
    while _app_backends(url, app_name):
        assert time.monotonic() < deadline, "backends of the killed workers linger"
        time.sleep(0.05)
    for thread in threads:
        thread.join(15)

    print(f"\nmaster exited {exited_after:.2f}s after SIGTERM (graceful timeout {grace})")
    assert grace - 0.5 < exited_after < grace + 2
    assert all(isinstance(result, httpx.HTTPError) for result in results.values()), results
    # The cut requests never committed: no half-applied write.
    assert stored_items(url, keyspace) == {key: ("before", 1) for key in keys}


@pytest.mark.slow
def test_killed_worker_is_replaced_and_retries_hide_it(
    server_factory: ServerFactory, databases: Databases, api_keys: list[str], keyspace: str
) -> None:
    """SIGKILL one of two workers under load: it is replaced; a retrying client sees no error."""
    server = server_factory("postgres", workers=2, KV_API_KEYS=api_keys[0])
    master = server.process.pid
    before = wait_for_workers(master, 2, set())
    registry = CollectorRegistry()
    writers = Writers(
        server.url,
        api_keys[0],
        registry,
        keyspace=keyspace,
        threads=4,
        operations=100_000,  # bounded by the stop below and by `seconds`
        seconds=60,
        seed=6,
    )
    writers.start()
    try:
        assert writers.wait_for(150, timeout=30)
        killed = kill_one_worker(master)
        killed_at = writers.completed
        after = wait_for_workers(master, 2, {killed}, timeout=30)
        replaced_at = writers.completed
        assert writers.wait_for(replaced_at + 150, timeout=30)  # and load goes on
    finally:
        writers.stop.set()
        writers.join(60)
    ledger = writers.ledger
    result = audit(ledger, stored_items(databases.url("postgres"), keyspace))
    retries = counter_values(registry, "kvclient_retries", "reason")

    print(
        f"\nkilled worker {killed} after {killed_at} operations; replaced after {replaced_at};"
        f" {sum(ledger.operations.values())} operations {dict(ledger.operations)};"
        f" retries {retries}; failures {len(ledger.failures)}; checked {result.checked} keys"
    )
    assert killed in before and len(after - before) == 1
    assert (result.lost, result.duplicated, result.unexpected) == ([], [], [])
    assert ledger.version_jumps == []
    assert ledger.failures == [], ledger.failures[:10]
    assert_clean_log(server.log())
