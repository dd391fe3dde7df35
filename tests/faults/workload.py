"""A concurrent kvclient write workload that remembers what was acknowledged, and its audit.

Each writer thread owns its keys, so the expected state of every key follows from what that one
thread saw: a key exists if its create was acknowledged, its value is the last acknowledged
update's value and its version is 1 + the number of acknowledged updates. A write applied twice
(a retry that was not recognised as one) shows up as a higher version, a lost write as a lower
version, a missing key or another value.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kvclient import KVClient, KVError, RetryPolicy
from prometheus_client import CollectorRegistry

RETRY = RetryPolicy(max_attempts=10, base_delay=0.05, max_delay=1)


@dataclass
class Acked:
    """The last acknowledged state of one key."""

    value: Any
    version: int
    updates: int = 0


@dataclass
class Ledger:
    """Everything the writers saw, merged from all threads."""

    acked: dict[str, Acked] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)  # a write on it failed: outcome unknown
    failures: list[str] = field(default_factory=list)
    version_jumps: list[str] = field(default_factory=list)  # a response skipped a version
    operations: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Audit:
    lost: list[str]
    duplicated: list[str]
    unexpected: list[str]
    checked: int


class Writers:
    """`threads` threads, each with its own KVClient, creating and updating keys of their own."""

    def __init__(
        self,
        url: str,
        api_key: str,
        registry: CollectorRegistry,
        *,
        keyspace: str,
        threads: int,
        operations: int,
        seconds: float,
        seed: int,
        keys_per_thread: int = 50,
        timeout: tuple[float, float] = (2.0, 10.0),
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.registry = registry
        self.keyspace = keyspace
        self.threads = threads
        self.operations = operations
        self.seconds = seconds
        self.seed = seed
        self.keys_per_thread = keys_per_thread
        self.timeout = timeout
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._completed = 0
        self._runner: threading.Thread | None = None

    @property
    def completed(self) -> int:
        """Logical operations finished so far (acknowledged or failed)."""
        with self._lock:
            return self._completed

    def start(self) -> None:
        self._runner = threading.Thread(target=self._run, name="writers")
        self._runner.start()

    def join(self, timeout: float) -> None:
        assert self._runner is not None
        self._runner.join(timeout)
        assert not self._runner.is_alive(), "writers did not finish in time"

    def wait_for(self, completed: int, timeout: float) -> bool:
        """Wait until `completed` operations are done; False if the writers ended first."""
        deadline = time.monotonic() + timeout
        while self.completed < completed:
            if self.finished.is_set():
                return False
            assert time.monotonic() < deadline, f"only {self.completed} operations done"
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        workers = [
            threading.Thread(target=self._write, args=(n, deadline), name=f"writer-{n}")
            for n in range(self.threads)
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            self.finished.set()

    def _write(self, n: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + n)
        own: list[str] = []
        acked: dict[str, Acked] = {}
        uncertain: set[str] = set()
        failures: list[str] = []
        jumps: list[str] = []
        operations: collections.Counter[str] = collections.Counter()
        kv = KVClient(
            self.url,
            api_key=self.api_key,
            retry=RETRY,
            timeout=self.timeout,
            registry=self.registry,
        )
        try:
            for i in range(self.operations):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                create = len(own) < self.keys_per_thread and (not own or rng.random() < 0.3)
                key = f"{self.keyspace}{n}-{len(own)}" if create else rng.choice(own)
                value = {"writer": n, "op": i, "pad": "x" * rng.randrange(64)}
                operations["create" if create else "update"] += 1
                try:
                    if create:
                        item = kv.create(key, value)
                        own.append(key)
                        acked[key] = Acked(value, item.version)
                        expected = 1
                    else:
                        item = kv.update(key, value)
                        previous = acked[key]
                        acked[key] = Acked(value, item.version, previous.updates + 1)
                        expected = previous.version + 1
                    if item.version != expected or item.value != value:
                        jumps.append(f"{key}: got v{item.version} {item.value}, want v{expected}")
                except KVError as exc:
                    uncertain.add(key)
                    if create:
                        own.append(key)  # it may exist; later updates keep the key uncertain
                        acked[key] = Acked(value, 1)
                    failures.append(
                        f"{'create' if create else 'update'} {key}: {type(exc).__name__}"
                        f" status={exc.status} code={exc.code}"
                        f" gave_up={exc.gave_up_reason}: {exc}"
                    )
                finally:
                    with self._lock:
                        self._completed += 1
        except Exception as exc:  # a bug in the workload itself must fail the test, not hang it
            failures.append(f"writer {n} crashed: {exc!r}")
        finally:
            kv.close()
            with self._lock:
                self.ledger.acked.update(acked)
                self.ledger.uncertain |= uncertain
                self.ledger.failures += failures
                self.ledger.version_jumps += jumps
                self.ledger.operations.update(operations)


def stored_items(database_url: str, keyspace: str) -> dict[str, tuple[Any, int]]:
    """key -> (value, version) of every item under `keyspace`, read from PostgreSQL directly."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT key, value, version FROM kv_item WHERE starts_with(key, %s)", [keyspace]
        ).fetchall()
    # The column holds each value's JSON text.
    return {key: (json.loads(value), version) for key, value, version in rows}


def audit(ledger: Ledger, stored: dict[str, tuple[Any, int]]) -> Audit:
    """Compare what was acknowledged with what the database holds."""
    lost, duplicated, unexpected = [], [], []
    checked = 0
    for key, acked in ledger.acked.items():
        if key in ledger.uncertain:
            continue
        checked += 1
        if key not in stored:
            lost.append(f"{key}: acknowledged create missing")
            continue
        value, version = stored[key]
        expected = 1 + acked.updates
        if version > expected:
            duplicated.append(f"{key}: version {version}, {acked.updates} updates acknowledged")
        elif version < expected:
            lost.append(f"{key}: version {version}, {acked.updates} updates acknowledged")
        elif value != acked.value:
            lost.append(f"{key}: value {value!r}, last acknowledged {acked.value!r}")
    for key in stored.keys() - ledger.acked.keys():
        unexpected.append(f"{key}: stored but never acknowledged")
    return Audit(lost, duplicated, unexpected, checked)


def counter_values(registry: CollectorRegistry, name: str, label: str) -> dict[str, float]:
    """The samples of counter `name` on `registry`, summed by one label."""
    totals: collections.Counter[str] = collections.Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_total":
                totals[sample.labels[label]] += sample.value
    return dict(totals)
