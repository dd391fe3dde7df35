"""A 503 means "not applied": a write the client was told failed never happens later.

Another session holds a lock on the whole item table for longer than KV_DB_TIMEOUT while plain
POSTs and unconditional PUTs keep arriving. Writes queue behind blocked database threads, run
out of time, and are answered 503; when the lock goes, none of those may still commit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import Databases, ServerFactory, mariadb_connection

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DB_TIMEOUT = 1.0
LOCK_SECONDS = 3.5  # past a queued write's deadline (KV_DB_TIMEOUT + 1 s) and its lock timeout
SEND_SECONDS = 3.0
SEND_EVERY = 0.05


@contextlib.contextmanager
def item_table_locked(backend: str, url: str) -> Iterator[None]:
    """Hold an exclusive lock on kv_item from a session of the test's own."""
    if backend == "postgres":
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("LOCK TABLE kv_item IN ACCESS EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    database = url.rsplit("/", 1)[1]
    with mariadb_connection(database) as conn, conn.cursor() as cursor:
        cursor.execute("LOCK TABLES kv_item WRITE")
        try:
            yield
        finally:
            cursor.execute("UNLOCK TABLES")


@pytest.mark.parametrize("workers", [0, 2], ids=["uvicorn", "gunicorn-2-workers"])
@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_writes_answered_503_are_never_applied(
    server_factory: ServerFactory,
    databases: Databases,
    keyspace: str,
    backend: str,
    workers: int,
) -> None:
    """Every POST answered 503 is absent afterwards; the PUT item's version is 1 + its 200s."""
    server = server_factory(backend, workers=workers, KV_DB_TIMEOUT=str(DB_TIMEOUT))
    counted = f"{keyspace}counted"
    with server.client() as client:
        assert client.post("/v1/items", json={"key": counted, "value": 0}).status_code == 201

    answers: list[tuple[str, str, int]] = []  # (method, key, status)
    lock = threading.Lock()

    def send(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            if n % 2:
                key = f"{keyspace}new{n}"
                response = client.post("/v1/items", json={"key": key, "value": n})
            else:
                key = counted
                response = client.put(f"/v1/items/{key}", json={"value": n})
        with lock:
            answers.append((response.request.method, key, response.status_code))

    senders: list[threading.Thread] = []
    with item_table_locked(backend, databases.url(backend)):
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < SEND_SECONDS:
            senders.append(threading.Thread(target=send, args=(n,)))
            senders[-1].start()
            n += 1
            time.sleep(SEND_EVERY)
        time.sleep(max(0.0, LOCK_SECONDS - (time.monotonic() - started)))
    for sender in senders:
        sender.join(30)
    # Whatever the service still had under way has met its statement timeout by now.
    time.sleep(DB_TIMEOUT + 1)

    statuses = {status for _, _, status in answers}
    assert statuses <= {200, 201, 503}, answers
    unavailable = [key for method, key, status in answers if method == "POST" and status == 503]
    assert len(answers) == len(senders) and unavailable, "the lock made no write fail"
    with server.client() as client:
        applied_later = [key for key in unavailable if client.get(f"/v1/items/{key}").is_success]
        created = [key for method, key, status in answers if method == "POST" and status == 201]
        missing = [key for key in created if not client.get(f"/v1/items/{key}").is_success]
        version = client.get(f"/v1/items/{counted}").json()["version"]
    puts_ok = sum(1 for method, _, status in answers if method == "PUT" and status == 200)
    print(
        f"\n{backend}, {workers or 1} worker(s): {len(answers)} writes,"
        f" {len(unavailable)} POSTs answered 503, {puts_ok} PUTs answered 200"
    )
    assert applied_later == [], f"{len(applied_later)} of {len(unavailable)} 503'd POSTs exist"
    assert missing == []
    assert version == 1 + puts_ok
