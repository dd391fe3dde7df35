"""One client shared by many threads (KVClient) or tasks (AsyncKVClient)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from kvclient import AsyncKVClient, KVClient, RetryPolicy, Testing

if TYPE_CHECKING:
    from conftest import FaultServer

THREADS = 40
CALLS_PER_THREAD = 5
FAULTS = 5
# More attempts than there are scripted faults: even if one call meets every 503 it succeeds,
# which is what made the old test (5 faults, 5 attempts) fail now and then.
POLICY = RetryPolicy(max_attempts=FAULTS + 1)


def test_many_threads_share_one_client(
    server: FaultServer, clock: Testing, caplog: pytest.LogCaptureFixture
) -> None:
    """40 threads create, update and read through one client: all succeed, each write once,
    and the connection pool never overflows."""
    server.problem(503, "service_unavailable", times=FAULTS)
    client = KVClient(server.url, retry=POLICY, registry=CollectorRegistry(), name="threads")

    def work(thread: int) -> list[int]:
        versions = []
        for call in range(CALLS_PER_THREAD):
            key = f"t{thread}-{call}"
            client.create(key, call)
            client.update(key, call + 1)
            versions.append(client.get(key).version)
        return versions

    with (
        caplog.at_level(logging.WARNING, logger="urllib3"),
        client,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        results = list(pool.map(work, range(THREADS)))

    assert results == [[2] * CALLS_PER_THREAD] * THREADS
    assert len(server.kv.items) == THREADS * CALLS_PER_THREAD
    assert len(server.kv.writes) == THREADS * CALLS_PER_THREAD * 2
    assert len(server.requests) == THREADS * CALLS_PER_THREAD * 3 + FAULTS
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_many_tasks_share_one_async_client(server: FaultServer, clock: Testing) -> None:
    """40 tasks on one AsyncKVClient all succeed, each write applied once."""
    server.problem(503, "service_unavailable", times=FAULTS)

    async def main() -> list[list[int]]:
        async with AsyncKVClient(
            server.url, retry=POLICY, registry=CollectorRegistry(), name="tasks"
        ) as client:

            async def work(task: int) -> list[int]:
                versions = []
                for call in range(CALLS_PER_THREAD):
                    key = f"a{task}-{call}"
                    await client.create(key, call)
                    await client.update(key, call + 1)
                    versions.append((await client.get(key)).version)
                return versions

            return list(await asyncio.gather(*(work(task) for task in range(THREADS))))

    assert asyncio.run(main()) == [[2] * CALLS_PER_THREAD] * THREADS
    assert len(server.kv.writes) == THREADS * CALLS_PER_THREAD * 2
    assert len(server.requests) == THREADS * CALLS_PER_THREAD * 3 + FAULTS
