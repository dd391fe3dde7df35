"""A stalled Redis (DEBUG SLEEP) must not stall the requests the rate limiter guards."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import PrivateRedis, ServerFactory
from tests.faults.support import assert_clean_log

pytestmark = pytest.mark.timeout(120)

STALL_SECONDS = 2
# After a Redis failure the limiter leaves Redis alone this long (README: "for a second").
COOLDOWN_SECONDS = 1.0


def test_stalled_redis_does_not_serialise_requests(
    server_factory: ServerFactory, private_redis: PrivateRedis, api_keys: list[str]
) -> None:
    """While Redis sleeps 2 s, 20 concurrent GETs to one worker finish long before it wakes."""
    server = server_factory(REDIS_URL=private_redis.url, KV_API_KEYS=api_keys[0])
    # One pool, so the client's own setup costs stay out of the timings; concurrent requests
    # each get a connection of their own.
    http = server.client(
        headers={"X-API-Key": api_keys[0]}, limits=httpx.Limits(max_connections=50)
    )

    def get(path: str) -> tuple[int, float]:
        started = time.monotonic()
        status = http.get(path).status_code
        return status, time.monotonic() - started

    assert [get("/v1/items/absent")[0] for _ in range(3)] == [404] * 3
    assert http.get("/readyz").json()["redis"] == "up"

    def stall() -> None:
        with redis.Redis(port=private_redis.port, socket_timeout=STALL_SECONDS + 5) as sleeper:
            sleeper.execute_command("DEBUG", "SLEEP", str(STALL_SECONDS))

    sleeper = threading.Thread(target=stall)
    sleeper.start()
    # Prove the stall is in effect before measuring: a PING now cannot be answered.
    time.sleep(0.2)
    probe = redis.Redis(port=private_redis.port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with probe, pytest.raises(redis.TimeoutError):
        probe.ping()
    stalled_at = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(21) as pool:
        health = pool.submit(get, "/healthz")
        burst = list(pool.map(get, ["/v1/items/absent"] * 20))
    burst_done = time.monotonic() - stalled_at
    alone = get("/healthz")
    still_stalled = sleeper.is_alive()
    # After the limiter's cooldown it tries Redis again: each later request costs one timeout.
    later = []
    while sleeper.is_alive():
        later.append(get("/v1/items/absent"))
    sleeper.join(STALL_SECONDS + 5)

    print(
        f"\nburst of 20 done in {burst_done:.2f}s (slowest {max(t for _, t in burst):.2f}s),"
        f" /healthz {health.result()[1]:.3f}s in it, {alone[1]:.3f}s alone;"
        f" {len(later)} later requests during the stall"
        f" (slowest {max((t for _, t in later), default=0):.2f}s)"
    )
    assert [status for status, _ in burst] == [404] * 20
    assert still_stalled, "Redis woke up before the burst was served: the test proves nothing"
    assert burst_done < 1.0, f"20 requests took {burst_done:.2f}s behind a stalled Redis"
    assert health.result()[0] == 200 and health.result()[1] < 0.5
    assert alone[0] == 200 and alone[1] < 0.25, alone
    assert later and all(status == 404 and elapsed < 0.5 for status, elapsed in later), later

    assert http.get("/readyz").json()["redis"] == "up"
    # Redis answers again: within one cooldown the limiter counts requests in Redis again.
    store = private_redis.client()

    def counted() -> int:
        return sum(store.zcard(key) for key in store.scan_iter("kvkit:rl:*"))

    deadline = time.monotonic() + 1 + COOLDOWN_SECONDS + 1
    before = counted()
    while counted() == before:
        assert time.monotonic() < deadline, "the limiter did not return to Redis"
        assert get("/v1/items/absent")[0] == 404
        time.sleep(0.05)
    assert_clean_log(server.log())


def test_reset_redis_connections_never_answer_500(
    server_factory: ServerFactory, api_keys: list[str], redis_url: str
) -> None:
    """Redis connections reset under the limiter, again and again (a Redis restart, a proxy or
    NAT dropping idle connections): every answer is the policy's (here open: the request goes
    on), never a 500, and /readyz says up or down, never 500. Under uvloop, writing to a pooled
    connection whose transport the reset closed raises RuntimeError, not ConnectionError."""
    from urllib.parse import urlparse

    from tests.tcp_proxy import TcpProxy

    target = urlparse(redis_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379))
    try:
        server = server_factory(
            REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0", KV_API_KEYS=api_keys[0], workers=2
        )
        http = server.client(
            headers={"X-API-Key": api_keys[0]}, limits=httpx.Limits(max_connections=20)
        )
        statuses: list[int] = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(25):
                statuses += pool.map(lambda _: http.get("/v1/items/absent").status_code, range(8))
                statuses.append(http.get("/readyz").status_code)
                proxy.cut_all()
                time.sleep(0.05)
                statuses += pool.map(lambda _: http.get("/v1/items/absent").status_code, range(8))
                statuses.append(http.get("/readyz").status_code)
                time.sleep(COOLDOWN_SECONDS / 4)
        errors = [line for line in server.log().splitlines() if '"level":"ERROR"' in line]
        print("\n".join(errors[:2]))  # shown when the test fails
        assert 500 not in statuses, statuses.count(500)
        assert set(statuses) <= {404, 200, 503}, set(statuses)
        assert "Traceback" not in server.log()
    finally:
        proxy.close()
