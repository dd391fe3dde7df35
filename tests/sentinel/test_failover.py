"""A Sentinel failover under load, against real servers: gunicorn with two workers, a master,
its replica and a sentinel. The limiter keeps answering, follows the new master, counts go on
there, and /readyz and the degraded count report what happened, when it happened."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.ratelimit.redis import COOLDOWN_SECONDS, SCRIPT_SHA
from tests.conftest import PrivateRedis, SentinelGroup, Server, ServerFactory, free_port
from tests.faults.support import assert_clean_log

pytestmark = pytest.mark.timeout(120)

LIMIT = 100_000  # no request of the test is refused: every count stays visible in the headers
SAMPLE_SECONDS = 0.2
# After the sentinel names the new master, the limiter must count there within FOLLOW_SECONDS
# (or a cooldown, after a crash) plus this margin for a loaded machine.
FOLLOW_BUDGET_SECONDS = 3.0
# The Redis timeout of the service under test. The default (50 ms) is about latency, and a
# machine running other suites at the same time misses it now and then: not what is tested.
REDIS_TIMEOUT = "0.5"
# Degraded decisions and a "down" in /readyz may show this long after the limiter followed:
# one cooldown, plus the age of a cached readiness answer and of a sample.
AFTERMATH_SECONDS = COOLDOWN_SECONDS + 1.0 + SAMPLE_SECONDS


@dataclass(frozen=True)
class Answer:
    at: float
    status: int  # 0: no answer at all


class Load:
    """Steady GETs of one item by one client from a few threads, each request on a fresh
    connection so that both gunicorn workers serve them; every answer is kept."""

    def __init__(self, server: Server, api_key: str, path: str, threads: int = 3) -> None:
        self.url = server.url + path
        self.headers = {"X-API-Key": api_key, "Connection": "close"}
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append(Answer(time.monotonic(), status))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def served(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for a in self.answers if a.status == 200 and since <= a.at < until)

    def rate(self) -> float:
        return len(self.answers) / (self.answers[-1].at - self.answers[0].at)


@dataclass(frozen=True)
class Sample:
    at: float  # taken from here on: it shows what happened before
    degraded: float | None  # kvkit_ratelimit_decisions_total{outcome="degraded"}
    redis: str | None  # /readyz's "redis"


@dataclass
class Watch:
    """What an operator sees, every SAMPLE_SECONDS: the degraded count and /readyz."""

    server: Server
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        at = time.monotonic()
        degraded = state = None
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(self.server.url + "/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for metric in family.samples:
                    if metric.name == "kvkit_ratelimit_decisions_total" and (
                        metric.labels.get("outcome") == "degraded"
                    ):
                        degraded = metric.value
        with contextlib.suppress(httpx.HTTPError, ValueError):
            state = httpx.get(self.server.url + "/readyz", timeout=5).json()["redis"]
        found = Sample(at, degraded, state)
        self.samples.append(found)
        return found

    @contextlib.contextmanager
    def running(self) -> Iterator[Watch]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(SAMPLE_SECONDS):
                self.sample()

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(15)

    def degraded_rises(self) -> list[float]:
        """When the degraded count went up (the first sample that saw it higher)."""
        seen = [(s.at, s.degraded) for s in self.samples if s.degraded is not None]
        return [b_at for (_, a), (b_at, b) in itertools.pairwise(seen) if b > a]

    def redis_down(self) -> list[float]:
        return [s.at for s in self.samples if s.redis == "down"]


def _when(event: Callable[[], bool], timeout: float) -> float:
    """The time `event()` first holds, polled every 20 ms (failing after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        at = time.monotonic()
        with contextlib.suppress(redis.RedisError):
            if event():
                return at
        assert at < deadline, f"not seen within {timeout} s"
        time.sleep(0.02)


def _evalsha_calls(group: SentinelGroup, node: PrivateRedis) -> int:
    """EVALSHA calls `node` has run (a replica runs none: scripts replicate as effects)."""
    stats = group.client(node).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _counted(group: SentinelGroup, node: PrivateRedis) -> int:
    """Requests counted on `node` (the load's client is the only one counted so far)."""
    client = group.client(node)
    return sum(client.zcard(key) for key in client.scan_iter("kvkit:rl:*"))


def _start(
    server_factory: ServerFactory, group: SentinelGroup, keys: list[str]
) -> tuple[Server, str]:
    """kvkit with two gunicorn workers through the sentinel (listed after one that is down),
    REDIS_URL naming a host that does not exist, and one item to read; the item's path."""
    server = server_factory(
        workers=2,
        REDIS_URL="redis://ignored.invalid:1/0",
        KV_REDIS_SENTINELS=f"127.0.0.1:{free_port()},{group.address}",
        KV_REDIS_SENTINEL_MASTER=group.SERVICE,
        KV_REDIS_TIMEOUT=REDIS_TIMEOUT,
        KV_RATE_LIMIT=f"{LIMIT}/minute",
        KV_API_KEYS=",".join(keys),
    )
    item = f"sentinel-{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        server.url + "/v1/items",
        json={"key": item, "value": 1},
        headers={"X-API-Key": keys[0]},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return server, f"/v1/items/{item}"


def _outages(server: Server) -> str:
    """What the server logged about losing Redis, for the test's summary line."""
    lines = [line for line in server.log().splitlines() if "cannot reach Redis" in line]
    first = json.loads(lines[0])["message"] if lines else ""
    return f"{len(lines)} outage(s) logged {first}".strip()


def _remaining(server: Server, key: str, path: str) -> int:
    response = httpx.get(server.url + path, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200
    return int(response.headers["RateLimit-Remaining"])


def test_sentinel_failover_under_load_is_followed_without_errors(
    server_factory: ServerFactory,
    sentinel_group: Callable[..., SentinelGroup],
    api_keys: list[str],
) -> None:
    """SENTINEL FAILOVER under load: no 5xx, the limiter moves to the new master and loads its
    script there, counts go on, degraded decisions and a Redis "down" in /readyz appear only
    around the switch, and the old master becomes a replica."""
    group = sentinel_group()
    old, new = group.servers
    server, path = _start(server_factory, group, api_keys)
    steady, fresh = api_keys
    group.client(new).script_flush()  # the new master gets the script from the limiter alone
    watch = Watch(server)
    try:
        with Load(server, steady, path) as load, watch.running():
            time.sleep(1.0)
            failover_at = time.monotonic()
            group.failover()
            promoted_at = _when(lambda: group.master() is new, 10)
            followed_at = _when(lambda: _evalsha_calls(group, new) > 0, FOLLOW_BUDGET_SECONDS)
            time.sleep(COOLDOWN_SECONDS)  # in-flight checks on the old master are done now
            left = _evalsha_calls(group, old)
            # The load goes on until Sentinel reconfigures the old master (its own fixed delay,
            # ~10 s after the switch), which also closes every client connection it has.
            demoted_at = _when(lambda: group.role(old) == "slave", 25)
            time.sleep(0.5)
        still_left = _evalsha_calls(group, old)
        counted_on_new = _counted(group, new)
        steady_left, fresh_left = _remaining(server, steady, path), _remaining(server, fresh, path)
        ready = httpx.get(server.url + "/readyz", timeout=5)
    finally:
        server.stop()

    statuses = {a.status for a in load.answers}
    degraded = watch.samples[-1].degraded or 0
    # Every request the limiter counted in Redis, less what the new master holds.
    lost = load.served() + 1 - int(degraded) - counted_on_new
    # Answers are timed when they arrive: those that left just after the follow were decided
    # on the old master too.
    in_switch = load.served(failover_at, followed_at + 0.5)
    print(
        f"\nSENTINEL FAILOVER: new master named after {promoted_at - failover_at:.2f} s,"
        f" counted on by the limiter {followed_at - promoted_at:.2f} s later, old master a"
        f" replica after {demoted_at - failover_at:.1f} s; {len(load.answers)} requests"
        f" ({load.rate():.0f}/s), statuses {statuses}; degraded decisions {degraded:.0f};"
        f" /readyz redis down {len(watch.redis_down())} of {len(watch.samples)} samples;"
        f" counts lost with the old master {lost} (of {in_switch} served in the switch);"
        f" {_outages(server)}"
    )
    assert statuses == {200}, statuses  # the limit is never reached: all served, none 5xx
    assert left == still_left, "a worker still runs the script on the old master"
    assert group.client(new).script_exists(SCRIPT_SHA) == [True]
    for at in watch.degraded_rises() + watch.redis_down():
        assert failover_at <= at <= followed_at + AFTERMATH_SECONDS, "outside the switch"
    # Counts continue: everything counted before the failover is on the new master.
    assert counted_on_new >= load.served(until=failover_at)
    assert 0 <= lost <= in_switch
    assert fresh_left == LIMIT - 1
    assert steady_left <= LIMIT - 1 - counted_on_new
    assert group.role(new) == "master"
    assert ready.status_code == 200 and ready.json()["redis"] == "up"
    log = server.log()
    assert log.count("the limiter follows") == 2, log  # once per worker
    assert_clean_log(log)


def test_a_crashed_master_degrades_until_sentinel_promotes_the_replica(
    server_factory: ServerFactory,
    sentinel_group: Callable[..., SentinelGroup],
    api_keys: list[str],
) -> None:
    """The master stops under load: every request is still served (fail-open), the degraded
    count rises and /readyz says Redis is down until the sentinel promotes the replica; then
    the limiter counts there again, on top of the counts made before the crash."""
    group = sentinel_group()
    old, new = group.servers
    server, path = _start(server_factory, group, api_keys)
    steady, fresh = api_keys
    watch = Watch(server)
    try:
        with Load(server, steady, path) as load, watch.running():
            time.sleep(1.0)
            crashed_at = time.monotonic()
            old.stop()
            promoted_at = _when(lambda: group.master() is new, 15)
            followed_at = _when(lambda: _evalsha_calls(group, new) > 0, FOLLOW_BUDGET_SECONDS)
            time.sleep(AFTERMATH_SECONDS)
        settled = watch.sample()
        counted_on_new = _counted(group, new)
        steady_left, fresh_left = _remaining(server, steady, path), _remaining(server, fresh, path)
    finally:
        server.stop()

    statuses = {a.status for a in load.answers}
    degraded = settled.degraded or 0
    print(
        f"\nmaster stopped: new master named after {promoted_at - crashed_at:.2f} s, counted"
        f" on by the limiter {followed_at - promoted_at:.2f} s later; {len(load.answers)}"
        f" requests ({load.rate():.0f}/s), statuses {statuses}; degraded decisions"
        f" {degraded:.0f} (of {load.served(crashed_at, followed_at + COOLDOWN_SECONDS)} served"
        f" from the crash to a cooldown after the follow);"
        f" /readyz redis down {len(watch.redis_down())} of {len(watch.samples)} samples;"
        f" {_outages(server)}"
    )
    assert statuses == {200}, statuses  # fail-open: served throughout, none 5xx
    assert degraded > 0
    assert watch.redis_down(), "/readyz never reported the outage"
    for at in watch.degraded_rises() + watch.redis_down():
        assert crashed_at <= at <= followed_at + AFTERMATH_SECONDS, "outside the outage"
    assert settled.redis == "up"
    # Replication is asynchronous, but a Redis that is stopped lets its replica catch up first.
    assert counted_on_new >= load.served(until=crashed_at)
    assert fresh_left == LIMIT - 1
    assert steady_left <= LIMIT - 1 - counted_on_new
    assert_clean_log(server.log())
