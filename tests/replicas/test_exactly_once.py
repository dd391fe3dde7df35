"""A retrying client's writes through HAProxy are each applied once, though a replica is killed.

tests/faults/test_exactly_once.py's workload and audit, now across two replicas: the retry of a
write whose replica died mid-request lands on the other one, which must recognise it by its
Idempotency-Key in the shared database.
"""

from __future__ import annotations

import os
import time

import pytest
from kvclient import KVClient
from prometheus_client import CollectorRegistry

from tests.conftest import ClusterFactory, Databases
from tests.faults.support import assert_clean_log
from tests.faults.workload import Writers, audit, counter_values, stored_items

# Reproduce a run with KVKIT_FAULT_SEED=<seed> (thread interleaving still varies).
SEED = int(os.environ.get("KVKIT_FAULT_SEED", "20240611"))
THREADS = 4
OPERATIONS = 5000  # per thread at most: the load stops AFTER_RESTART operations after the restart
SECONDS = 90  # and at most this long
KILL_AT = 300  # operations
AFTER_RESTART = 200  # operations


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_replica_loses_and_doubles_no_write(
    cluster_factory: ClusterFactory,
    databases: Databases,
    redis_url: str,
    api_keys: list[str],
    keyspace: str,
) -> None:
    """SIGKILL one replica (master and workers) under kvclient writes, then start it again:
    every acknowledged write is stored once, none lost."""
    cluster = cluster_factory(
        REDIS_URL=redis_url, KV_API_KEYS=api_keys[0], KV_RATE_LIMIT="1000000/minute"
    )
    victim, survivor = cluster.replicas
    registry = CollectorRegistry()
    events: dict[str, int] = {}
    writers = Writers(
        cluster.url,
        api_keys[0],
        registry,
        keyspace=keyspace,
        threads=THREADS,
        operations=OPERATIONS,
        seconds=SECONDS,
        seed=SEED,
    )
    started = time.monotonic()
    writers.start()
    try:
        assert writers.wait_for(KILL_AT, timeout=SECONDS), "load ended before the kill"
        victim.kill()
        events["killed at operation"] = writers.completed
        cluster.haproxy.wait_for(victim.name, "DOWN")
        events["out of rotation at operation"] = writers.completed
        victim.start()
        cluster.haproxy.wait_for(victim.name, "UP")
        events["back in rotation at operation"] = writers.completed
        restarted = writers.completed
        assert writers.wait_for(restarted + AFTER_RESTART, timeout=SECONDS), "load ended early"
    finally:
        writers.stop.set()
        writers.join(120)
    elapsed = time.monotonic() - started
    stats = cluster.haproxy.stats()

    ledger = writers.ledger
    stored = stored_items(databases.url("postgres"), keyspace)
    result = audit(ledger, stored)
    with KVClient(survivor.url, api_key=api_keys[0], registry=CollectorRegistry()) as direct:
        listed = {item.key: (item.value, item.version) for item in direct.iter_items(keyspace)}
    retries = counter_values(registry, "kvclient_retries", "reason")
    operations = sum(ledger.operations.values())
    print(
        f"\nseed {SEED}: {operations} operations ({dict(ledger.operations)}) by {THREADS} threads"
        f" in {elapsed:.1f}s through HAProxy over 2 replicas, one SIGKILLed; events {events}"
        f"\nclient retries {int(sum(retries.values()))} {retries}; HAProxy per replica {stats}"
        f"\nacknowledged keys {len(ledger.acked)}, checked {result.checked},"
        f" uncertain {len(ledger.uncertain)}, client failures {len(ledger.failures)}"
        f"\nduplicates found = {len(result.duplicated)}, lost = {len(result.lost)},"
        f" unexpected = {len(result.unexpected)}, version jumps seen = {len(ledger.version_jumps)}"
    )
    assert operations >= KILL_AT + AFTER_RESTART, "too little load to prove anything"
    assert result.duplicated == [], result.duplicated[:10]
    assert result.lost == [], result.lost[:10]
    assert result.unexpected == [], result.unexpected[:10]
    assert ledger.version_jumps == [], ledger.version_jumps[:10]
    assert ledger.failures == [], ledger.failures[:10]  # retries hid the kill
    assert result.checked == len(ledger.acked) > 0
    assert listed == stored  # what the API serves is what the database holds
    for replica in cluster.replicas:
        assert_clean_log(replica.log())
