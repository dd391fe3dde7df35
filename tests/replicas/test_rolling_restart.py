"""Restarting each replica in turn behind HAProxy fails no request of a client that never retries.

A stopping replica answers /readyz 503 for KV_SHUTDOWN_DRAIN_SECONDS while it keeps serving, and
closes each kept-alive connection after its current response, so HAProxy takes it out of rotation
before it stops accepting and never sends a request on a connection it is closing. Without the
drain (KVKIT_REPLICA_DRAIN_SECONDS=0: gunicorn's plain SIGTERM) requests fail when HAProxy sends
one on a kept-alive connection as the stopping worker closes it. That is a race, so
test_drain.py also checks the drain's promises one by one, which fail every time without it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import DRAIN_SECONDS, ClusterFactory
from tests.faults.support import assert_clean_log

DRAIN = float(os.environ.get("KVKIT_REPLICA_DRAIN_SECONDS", DRAIN_SECONDS))
# Enough clients that HAProxy holds idle connections to every worker when it stops: with 4,
# gunicorn's plain SIGTERM failed a request in 3 runs of 8; with 12, in every run of 4.
THREADS = 12
KEYS_PER_THREAD = 5
# Requests at steady state before the first restart, and after each one.
SETTLE_REQUESTS = 200


class SteadyLoad:
    """Threads with a keep-alive session each, sending GET and PUT through HAProxy until stopped;
    a request that fails is counted, never repeated."""

    def __init__(self, url: str, keyspace: str, threads: int) -> None:
        self.url = url
        self.keyspace = keyspace
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._sent = 0
        self._threads = [
            threading.Thread(target=self._run, args=(n,), name=f"load-{n}") for n in range(threads)
        ]

    @property
    def sent(self) -> int:
        with self._lock:
            return self._sent

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} did not finish"

    def wait_for(self, sent: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < sent:
            assert time.monotonic() < deadline, f"only {self.sent} requests sent"
            time.sleep(0.02)

    def _run(self, n: int) -> None:
        keys = [f"{self.keyspace}{n}-{k}" for k in range(KEYS_PER_THREAD)]
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for key in keys:
                self._send(client, "POST", "/v1/items", {"key": key, "value": 0}, 201)
            i = 0
            while not self.stop.is_set():
                key = keys[i % KEYS_PER_THREAD]
                if i % 2:
                    self._send(client, "PUT", f"/v1/items/{key}", {"value": i}, 200)
                else:
                    self._send(client, "GET", f"/v1/items/{key}", None, 200)
                i += 1

    def _send(
        self, client: httpx.Client, method: str, path: str, body: object, expected: int
    ) -> None:
        failure = None
        try:
            response = client.request(method, path, json=body)
            status = response.status_code
            if status != expected:
                failure = f"{method} {path}: {status} {response.text[:200]}"
        except httpx.HTTPError as exc:
            status = 0
            failure = f"{method} {path}: {type(exc).__name__}: {exc}"
        with self._lock:
            self._sent += 1
            self.statuses[status] += 1
            if failure:
                self.failures.append(f"{time.monotonic():.3f} {failure}")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rolling_restart_fails_no_request(
    cluster_factory: ClusterFactory, redis_url: str, keyspace: str
) -> None:
    """SIGTERM, exit and start again, one replica then the other, under steady keep-alive load:
    every request of a client without retries succeeds."""
    cluster = cluster_factory(
        REDIS_URL=redis_url,
        KV_RATE_LIMIT="1000000/minute",
        KV_SHUTDOWN_DRAIN_SECONDS=str(DRAIN),
    )
    load = SteadyLoad(cluster.url, keyspace, THREADS)
    load.start()
    steps: dict[str, dict[str, float]] = {}
    during: dict[str, int] = {}
    served_after: dict[str, int] = {}
    try:
        load.wait_for(SETTLE_REQUESTS)
        for replica in cluster.replicas:
            before = load.sent
            steps[replica.name] = cluster.restart(replica)
            during[replica.name] = load.sent - before
            back = cluster.haproxy.stats()[replica.name].requests
            load.wait_for(load.sent + SETTLE_REQUESTS)
            served_after[replica.name] = cluster.haproxy.stats()[replica.name].requests - back
    finally:
        load.join()
    stats = cluster.haproxy.stats()

    print(
        f"\nrolling restart with KV_SHUTDOWN_DRAIN_SECONDS={DRAIN}: {load.sent} requests by"
        f" {THREADS} keep-alive clients without retries, {len(load.failures)} failed"
        f"\nstatuses {dict(load.statuses)}; requests while each replica restarted {during},"
        f" served by it once back {served_after}"
        f"\nseconds per step {steps}"
        f"\nHAProxy per replica: {stats}"
    )
    assert load.failures == [], load.failures[:20]
    assert all(count > 0 for count in during.values()), "no load while a replica restarted"
    assert all(count > 0 for count in served_after.values()), "a replica did not come back"
    assert all(stats[name].status == "UP" for name in stats)
    for replica in cluster.replicas:
        # The drain ran: SIGTERM to exit took at least its length.
        assert steps[replica.name]["exit"] >= DRAIN
        assert_clean_log(replica.log())
