"""The PostgreSQL primary dies under a write load; Patroni promotes the synchronous standby.

kvkit reaches the cluster either through libpq's multi-host URL with
`target_session_attrs=read-write` or through HAProxy routing by Patroni's `GET /primary`. Two
loads run against one kvkit process, which is never restarted:

- kvclient writers, retrying with one Idempotency-Key per write as applications do, logging
  every acknowledged write (its key, value, Idempotency-Key and the item returned);
- a prober sending single POSTs without retries, so every answer the service gives during the
  failover is seen and timed.

The checks: only 2xx or prompt 503s, never a 500 or a hang; writes succeed again without a
restart; every acknowledged write is on the promoted node; a 503 that says "not applied" left
nothing behind; and replaying an acknowledged write's Idempotency-Key after the failover returns
the original status and body.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kvclient import Item, KVClient, KVError, RetryEvent, RetryPolicy
from prometheus_client import CollectorRegistry

from tests.conftest import PatroniCluster, PrimaryRouter, Server, service_env, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DB_TIMEOUT = 1.0
# kvkit answers within KV_DB_TIMEOUT + 1 s (its deadline margin); the rest is scheduling on a
# busy 2-core machine.
ANSWER_BOUND = DB_TIMEOUT + 2.0
LOAD_BEFORE = 2.5  # seconds of load before the primary dies
LOAD_AFTER = 3.0  # seconds of load after writes succeed again
RECOVERY_LIMIT = 30.0  # Patroni's ttl is 6 s; anything near this is a failure to recover
WRITER_THREADS = 3
KEYS_PER_WRITER = 20
# Rides out a failover: many attempts, short backoff, a budget the test never exhausts. A read
# timeout just above kvkit's own bound turns a hung request into a visible `read_timeout` retry.
WRITER_RETRY = RetryPolicy(
    max_attempts=200,
    base_delay=0.05,
    max_delay=0.5,
    deadline=60,
    budget_capacity=10_000,
)
WRITER_TIMEOUT = (2.0, ANSWER_BOUND)


@dataclass(frozen=True)
class AckedWrite:
    """One write kvkit acknowledged, with everything needed to replay it."""

    method: str
    key: str
    value: Any
    idempotency_key: str
    status: int
    body: bytes
    acked_at: float


@dataclass(frozen=True)
class Answer:
    """One prober request: when it was sent, how long it took, what came back."""

    sent_at: float
    elapsed: float
    status: int  # 0: no HTTP answer at all
    key: str
    idempotency_key: str
    body: bytes
    retry_after: str | None = None
    error: str = ""


@dataclass
class Load:
    """The writers' and the prober's records, filled by their threads."""

    api_key: str
    keyspace: str
    acked: list[AckedWrite] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def on_retry(self, event: RetryEvent) -> None:
        with self.lock:
            self.retries[event.reason] += 1


def _writer(url: str, load: Load, n: int) -> None:
    """Creates keys of its own and updates them, each write with its own Idempotency-Key."""
    own: list[str] = []
    kv = KVClient(
        url,
        api_key=load.api_key,
        retry=WRITER_RETRY,
        timeout=WRITER_TIMEOUT,
        registry=CollectorRegistry(),
        on_retry=load.on_retry,
        pacing=False,
    )
    op = 0
    try:
        while not load.stop.is_set():
            op += 1
            create = len(own) < KEYS_PER_WRITER and (not own or op % 3 == 0)
            key = f"{load.keyspace}w{n}-{len(own)}" if create else own[op % len(own)]
            value = {"writer": n, "op": op}
            idempotency_key = uuid.uuid4().hex
            try:
                if create:
                    item = kv.create(key, value, idempotency_key)
                    own.append(key)
                else:
                    item = kv.update(key, value, idempotency_key=idempotency_key)
            except KVError as exc:  # the retry deadline passed: a failure of recovery
                with load.lock:
                    load.failures.append(f"{key}: {type(exc).__name__} {exc.status} {exc}")
                if create:
                    own.append(key)
                continue
            body = json.dumps(item.to_json()).encode()
            write = AckedWrite(
                "POST" if create else "PUT",
                key,
                value,
                idempotency_key,
                201 if create else 200,
                body,
                time.monotonic(),
            )
            with load.lock:
                load.acked.append(write)
    finally:
        kv.close()


def _prober(url: str, load: Load) -> None:
    """Single POSTs, no retries: every answer kvkit gives is recorded and timed."""
    headers = {"Authorization": f"Bearer {load.api_key}"}
    with httpx.Client(base_url=url, timeout=ANSWER_BOUND + 5, headers=headers) as client:
        n = 0
        while not load.stop.is_set():
            n += 1
            key, idempotency_key = f"{load.keyspace}p{n}", uuid.uuid4().hex
            sent = time.monotonic()
            try:
                response = client.post(
                    "/v1/items",
                    json={"key": key, "value": {"probe": n}},
                    headers={"Idempotency-Key": idempotency_key},
                )
                status, body, error = response.status_code, response.content, ""
                retry_after = response.headers.get("retry-after")
            except httpx.HTTPError as exc:
                status, body, error, retry_after = 0, b"", f"{type(exc).__name__}: {exc}", None
            elapsed = time.monotonic() - sent
            answer = Answer(sent, elapsed, status, key, idempotency_key, body, retry_after, error)
            with load.lock:
                load.answers.append(answer)
                if 200 <= status < 300:
                    load.acked.append(
                        AckedWrite(
                            "POST", key, {"probe": n}, idempotency_key, status, body, sent + elapsed
                        )
                    )
            time.sleep(0.02)


def _stored(database_url: str, keyspace: str) -> dict[str, tuple[Any, int]]:
    """key -> (value, version) of the load's items, read from the promoted node directly."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT key, value, version FROM kv_item WHERE starts_with(key, %s)", [keyspace]
        ).fetchall()
    return {key: (json.loads(value), version) for key, value, version in rows}


def _start_kvkit(tmp_path: Path, database_url: str) -> Server:
    env = service_env(
        DATABASE_URL=database_url,
        KV_DB_TIMEOUT=str(DB_TIMEOUT),
        KV_RATE_LIMIT="1000000/minute",
    )
    return start_server(tmp_path, env)


def _is_unavailable(answer: Answer) -> bool:
    """A 503 problem response with Retry-After: the promised answer to an outage."""
    if answer.status != 503 or answer.retry_after is None:
        return False
    problem = json.loads(answer.body)
    return bool(problem.get("code") == "service_unavailable")


def _not_applied(answer: Answer) -> bool:
    """Whether a 503 promised the write was not applied (unlike an unconfirmed COMMIT)."""
    return "may have been applied" not in json.loads(answer.body).get("detail", "")


@pytest.mark.parametrize("connection", ["multihost_url", "haproxy"])
def test_primary_failover_loses_no_acknowledged_write(
    connection: str,
    patroni_cluster: PatroniCluster,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Primary killed under load: prompt 503s, recovery without restart, nothing acked is lost."""
    if connection == "haproxy":
        proxy: PrimaryRouter = request.getfixturevalue("haproxy")
        database_url = proxy.url()
    else:
        database_url = patroni_cluster.multihost_url()
    server = _start_kvkit(tmp_path, database_url)
    try:
        _fail_over_under_load(connection, patroni_cluster, server)
    finally:
        server.stop()


def _fail_over_under_load(connection: str, cluster: PatroniCluster, server: Server) -> None:
    load = Load(api_key=uuid.uuid4().hex, keyspace=f"f{uuid.uuid4().hex[:10]}.")
    threads = [
        threading.Thread(target=_writer, args=(server.url, load, n), name=f"writer-{n}")
        for n in range(WRITER_THREADS)
    ]
    threads.append(threading.Thread(target=_prober, args=(server.url, load), name="prober"))
    old_primary = cluster.primary()
    new_primary = cluster.other(old_primary)
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_BEFORE)
        old_primary.crash()
        # From here no request can reach the old primary: it and its backends are gone.
        stopped_at = time.monotonic()
        with load.lock:
            acked_before = [w for w in load.acked if w.acked_at < stopped_at]
        deadline = stopped_at + RECOVERY_LIMIT
        while not new_primary.is_primary():
            assert time.monotonic() < deadline, "Patroni promoted no standby"
            time.sleep(0.05)
        promoted_after = time.monotonic() - stopped_at
        while not any(a.sent_at > stopped_at and a.status == 201 for a in list(load.answers)):
            assert time.monotonic() < deadline, "no write succeeded after the failover"
            time.sleep(0.05)
        time.sleep(LOAD_AFTER)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(ANSWER_BOUND + 70)
    assert not any(thread.is_alive() for thread in threads), "the load did not stop"

    after = [a for a in load.answers if a.sent_at > stopped_at]
    first_success = min(a.sent_at + a.elapsed for a in after if a.status == 201)
    recovered_after = first_success - stopped_at
    statuses = collections.Counter(a.status for a in after)
    slowest = max(a.elapsed for a in load.answers)

    # Only 2xx and prompt 503s: never a 500, a dropped connection or a hang.
    wrong = [a for a in load.answers if a.status != 201 and not _is_unavailable(a)]
    assert not wrong, [(a.status, a.error or a.body[:200]) for a in wrong[:5]]
    assert slowest < ANSWER_BOUND, f"an answer took {slowest:.2f}s"
    assert statuses[503] >= 1, "the failover was never seen"
    assert set(load.retries) <= {"status_503"}, load.retries
    assert not load.failures, load.failures[:5]
    # Once writes succeed again, they keep succeeding: no connection is left on the dead node.
    settled = [a for a in load.answers if a.sent_at > first_success + 1.0]
    timeline = [(round(a.sent_at - stopped_at, 2), a.status) for a in after]
    assert settled and all(a.status == 201 for a in settled), timeline

    # Every acknowledged write is on the promoted node; a "not applied" 503 left nothing.
    stored = _stored(cluster.node_url(new_primary), load.keyspace)
    latest: dict[str, AckedWrite] = {}
    updates: collections.Counter[str] = collections.Counter()
    for write in sorted(load.acked, key=lambda w: w.acked_at):
        latest[write.key] = write
        updates[write.key] += write.method == "PUT"
    lost = [
        key for key, write in latest.items() if stored.get(key) != (write.value, 1 + updates[key])
    ]
    assert not lost, [(key, stored.get(key), latest[key].value) for key in lost[:5]]
    refused = [a.key for a in load.answers if a.status == 503 and _not_applied(a)]
    assert not [key for key in refused if key in stored], "a 503 said 'not applied' wrongly"

    # Replays after the failover return the original outcome of writes acknowledged before it.
    mismatched = []
    headers = {"Authorization": f"Bearer {load.api_key}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=headers) as client:
        for write in acked_before:
            replay_headers = {"Idempotency-Key": write.idempotency_key}
            if write.method == "POST":
                document = {"key": write.key, "value": write.value}
                response = client.post("/v1/items", json=document, headers=replay_headers)
            else:
                response = client.put(
                    f"/v1/items/{write.key}", json={"value": write.value}, headers=replay_headers
                )
            same_body = (
                response.content == write.body
                if write.key.startswith(f"{load.keyspace}p")
                else Item.from_json(response.json()) == Item.from_json(json.loads(write.body))
            )
            replayed = response.headers.get("idempotent-replayed") == "true"
            if response.status_code != write.status or not same_body or not replayed:
                mismatched.append((write.method, write.key, response.status_code, response.text))
    assert acked_before, "no write was acknowledged before the failover"
    assert not mismatched, mismatched[:5]

    print(
        f"\n{connection}: primary {old_primary.name} killed; {new_primary.name} promoted after"
        f" {promoted_after:.1f}s; first successful write {recovered_after:.1f}s after the kill;"
        f" slowest answer {slowest:.2f}s; prober answers after the kill"
        f" {dict(sorted(statuses.items()))}; kvclient retries {dict(load.retries)};"
        f" {len(load.acked)} acknowledged writes on {len(latest)} keys all present;"
        f" {len(acked_before)} replays of pre-failover writes identical"
    )


def test_write_that_reaches_a_standby_answers_503_and_applies_nothing(
    patroni_cluster: PatroniCluster, tmp_path: Path
) -> None:
    """A DNS name or VIP that still names the old primary after a failover sends kvkit to a
    standby: reads work there, and every write is refused by the server (read-only transaction)
    and answers a 503 that says nothing was applied, never a 500."""
    primary = patroni_cluster.primary()
    standby = patroni_cluster.other(primary)
    key = f"s{uuid.uuid4().hex[:10]}"
    with psycopg.connect(patroni_cluster.node_url(primary), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO kv_item (key, value, version, created_at, updated_at)"
            " VALUES (%s, %s, 1, now(), now())",
            [key, '{"on": "primary"}'],
        )
    server = _start_kvkit(tmp_path, patroni_cluster.node_url(standby))
    try:
        with httpx.Client(base_url=server.url, timeout=ANSWER_BOUND + 5) as client:
            deadline = time.monotonic() + 10  # synchronous commit is flushed, maybe not replayed
            while (read := client.get(f"/v1/items/{key}")).status_code == 404:
                assert time.monotonic() < deadline, "the row never reached the standby"
                time.sleep(0.1)
            assert read.status_code == 200, read.text
            assert read.json()["value"] == {"on": "primary"}
            attempts = {
                "create": client.post("/v1/items", json={"key": f"{key}-new", "value": 1}),
                "create with key": client.post(
                    "/v1/items",
                    json={"key": f"{key}-idem", "value": 1},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                ),
                "update": client.put(f"/v1/items/{key}", json={"value": 2}),
                "conditional update": client.put(
                    f"/v1/items/{key}", json={"value": 3}, headers={"If-Match": '"1"'}
                ),
                "delete": client.delete(f"/v1/items/{key}"),
            }
    finally:
        server.stop()
    for name, response in attempts.items():
        assert response.status_code == 503, (name, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        assert "retry-after" in response.headers, name
        assert "may have been applied" not in response.json().get("detail", ""), name
    stored = _stored(patroni_cluster.node_url(primary), key)
    assert stored == {key: ({"on": "primary"}, 1)}
