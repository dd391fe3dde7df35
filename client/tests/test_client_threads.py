"""One client shared by many threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from kvclient import KVClient

if TYPE_CHECKING:
    from conftest import FaultServer

THREADS = 8
CALLS_PER_THREAD = 15


def test_many_threads_share_one_client(client: KVClient, server: FaultServer) -> None:
    """Concurrent creates, updates and reads through one client all succeed, each write once."""
    server.problem(503, "service_unavailable", times=5)

    def work(thread: int) -> list[int]:
        versions = []
        for call in range(CALLS_PER_THREAD):
            key = f"t{thread}-{call}"
            client.create(key, call)
            client.update(key, call + 1)
            versions.append(client.get(key).version)
        return versions

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS)))

    assert results == [[2] * CALLS_PER_THREAD] * THREADS
    assert len(server.kv.items) == THREADS * CALLS_PER_THREAD
    assert len(server.kv.writes) == THREADS * CALLS_PER_THREAD * 2
    assert len(server.requests) == THREADS * CALLS_PER_THREAD * 3 + 5
