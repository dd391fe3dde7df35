"""Reads by key batched per event-loop pass: each read gets its own item, and sees prior writes."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx

from tests.conftest import Server

BATCHED = re.compile(r'^kvkit_db_duration_seconds_count\{operation="get_items"\} (\S+)$', re.M)


def batched_queries(client: httpx.Client) -> float:
    match = BATCHED.search(client.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


async def read_all(url: str, keys: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.get(f"/v1/items/{key}") for key in keys))


def test_concurrent_reads_each_get_their_own_item(api_server: Server, keyspace: str) -> None:
    """A burst of GETs (some for absent keys) is answered key by key, and batches do form."""
    client = api_server.client()
    keys = [f"{keyspace}{n:03d}" for n in range(40)]
    for n, key in enumerate(keys):
        assert client.post("/v1/items", json={"key": key, "value": {"n": n}}).status_code == 201
    absent = [f"{keyspace}absent{n}" for n in range(5)]
    before = batched_queries(client)
    for _ in range(5):  # a burst normally batches at once; the loop only absorbs bad timing
        responses = asyncio.run(read_all(api_server.url, keys + absent + keys[:3]))
        for key, response in zip(keys + absent + keys[:3], responses, strict=True):
            if key in absent:
                assert response.status_code == 404
                assert response.json()["type"] == "urn:kvkit:problem:not_found"
            else:
                assert response.status_code == 200
                body = response.json()
                assert body["key"] == key
                assert body["value"] == {"n": int(key[-3:])}
        if batched_queries(client) > before:
            break
    assert batched_queries(client) > before, "no GETs were ever answered together"


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
