"""Reads by key batched per event-loop pass: each read gets its own item, and sees prior writes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
from prometheus_client import REGISTRY

from app.services import items as service
from app.store.records import Status
from tests.conftest import Server


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_reads_of_one_pass_are_answered_by_one_query_each_batch(
    services: str, keyspace: str
) -> None:
    """40 items, 5 absent keys and 3 repeats read at once: 48 answers from 2 queries."""
    keys = [f"{keyspace}{n:03d}" for n in range(40)]
    asyncio.run(_create_all(keys))
    absent = [f"{keyspace}absent{n}" for n in range(5)]
    wanted = keys + absent + keys[:3]
    queries = counted("kvkit_db_duration_seconds_count", operation="get_items")
    found = asyncio.run(_read_all(wanted))
    assert counted("kvkit_db_duration_seconds_count", operation="get_items") - queries == 2
    for key, record in zip(wanted, found, strict=True):
        if key in absent:
            assert record is None
        else:
            assert record is not None and record.value == f'{{"n":{int(key[-3:])}}}'


async def _read_all(keys: list[str]) -> list[Any]:
    return await asyncio.gather(*(service.read_item(key) for key in keys))


async def _create_all(keys: list[str]) -> None:
    outcomes = await asyncio.gather(
        *(service.create_item(key, f'{{"n":{n}}}', None) for n, key in enumerate(keys))
    )
    assert {outcome.status for outcome in outcomes} == {Status.CREATED}


def test_a_read_after_a_write_sees_it_while_other_reads_are_batched(
    api_server: Server, keyspace: str
) -> None:
    """Read-your-writes per key: each writer's GET right after its PUT returns that version."""
    setup = api_server.client()
    writers = 6
    for w in range(writers):
        response = setup.post("/v1/items", json={"key": f"{keyspace}w{w}", "value": 0})
        assert response.status_code == 201
    stop = threading.Event()
    failures: list[str] = []

    def writer(w: int) -> None:
        key = f"{keyspace}w{w}"
        with httpx.Client(base_url=api_server.url, timeout=30) as client:
            for n in range(1, 31):
                put = client.put(f"/v1/items/{key}", json={"value": n})
                if put.status_code != 200:
                    failures.append(f"PUT {key} -> {put.status_code}")
                    return
                got = client.get(f"/v1/items/{key}")
                if got.status_code != 200 or got.json()["version"] != put.json()["version"]:
                    failures.append(f"{key}: wrote {put.json()}, read {got.text}")
                    return
                if got.json()["value"] != n:
                    failures.append(f"{key}: wrote {n}, read {got.json()['value']}")
                    return

    def reader() -> None:  # keeps other GETs in flight, so the writers' reads share batches
        with httpx.Client(base_url=api_server.url, timeout=30) as client:
            while not stop.is_set():
                client.get(f"/v1/items/{keyspace}w{writers - 1}")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in readers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert failures == []
