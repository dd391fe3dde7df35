"""What the saturation panels and the first-error alerts read, from a real gunicorn with two
workers: counters that exist at 0 before anything happened, database threads and connections,
and the CPU and memory of the whole process tree."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, ServerFactory, free_port

WORKERS, DB_THREADS = 2, 3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, redis_url: str) -> tuple[Server, str]:
    port = free_port()
    server = server_factory(
        "postgres",
        workers=WORKERS,
        KV_METRICS_PORT=str(port),
        KV_DB_THREADS=str(DB_THREADS),
        REDIS_URL=redis_url,
    )
    return server, f"http://127.0.0.1:{port}/metrics"


def test_counters_feeding_panels_and_alerts_exist_at_zero_before_any_event(
    server: tuple[Server, str],
) -> None:
    """Before a single error, the error and outcome counters are exported with 0 for every
    known label value, so a panel shows 0 (not "No data") and rate() sees the first error."""
    samples = scrape(server[1])
    for kind in ("unavailable", "timeout", "conflict", "other", "overloaded"):
        assert value(samples, "kvkit_db_errors_total", kind=kind) == 0, kind
    for operation in ("ping", "evalsha"):
        assert value(samples, "kvkit_redis_errors_total", operation=operation) == 0
    for outcome in ("replayed", "key_reused", "in_progress"):
        assert value(samples, "kvkit_idempotency_events_total", outcome=outcome) == 0
    assert value(samples, "kvkit_ratelimit_decisions_total", outcome="degraded") == 0
    five_xx = value(
        samples,
        "kvkit_http_requests_total",
        method="PUT",
        route="/v1/items/{key}",
        status_class="5xx",
    )
    assert five_xx == 0


def test_database_threads_and_connections_are_counted_over_both_workers(
    server: tuple[Server, str], keyspace: str
) -> None:
    """Thread capacity sums both workers; while the item table is locked the GETs waiting on it
    show as busy threads, and afterwards every thread that ran one holds its connection."""
    api, metrics = server
    # The server answers once one worker is up; the other starts its threads a moment later.
    threads = 0.0
    for _ in range(100):
        threads = value(scrape(metrics), "kvkit_db_threads") or 0
        if threads >= WORKERS * DB_THREADS:
            break
        threading.Event().wait(0.1)
    assert threads == WORKERS * DB_THREADS
    client = api.client()
    assert client.post("/v1/items", json={"key": f"{keyspace}-a", "value": 1}).status_code == 201
    url = api.env["DATABASE_URL"].replace("postgres://", "postgresql://")
    with psycopg.connect(url) as lock:
        lock.execute("LOCK TABLE kv_item IN ACCESS EXCLUSIVE MODE")
        waiting = [
            threading.Thread(
                target=httpx.get, args=(f"{api.url}/v1/items/{keyspace}-{n}",), daemon=True
            )
            for n in range(8)
        ]
        for thread in waiting:
            thread.start()
        busy = 0.0
        for _ in range(50):
            busy = value(scrape(metrics), "kvkit_db_threads_busy") or 0
            if busy >= 2:
                break
            threading.Event().wait(0.1)
        assert busy >= 2  # both workers' GETs wait on the lock, each in a database thread
    for thread in waiting:
        thread.join(timeout=30)
    samples = scrape(metrics)
    assert value(samples, "kvkit_db_threads_busy") == 0
    held = value(samples, "kvkit_db_connections_open") or 0
    assert 2 <= held <= WORKERS * DB_THREADS


def test_cpu_and_memory_cover_the_master_and_every_worker(server: tuple[Server, str]) -> None:
    """process_* sum the gunicorn master and its workers: the memory is that of all three
    processes as the kernel reports it, not of the one that answered the scrape."""
    api, metrics = server
    master = api.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == WORKERS
    pages = 0
    for pid in [master, *map(int, children)]:
        pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    expected = pages * 4096
    samples = scrape(metrics)
    memory = value(samples, "process_resident_memory_bytes") or 0
    assert 0.8 * expected <= memory <= 1.25 * expected
    assert (value(samples, "process_cpu_seconds_total") or 0) > 0
