"""The limiter's client through a real sentinel: REDIS_URL's database and password are kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.ratelimit.decision import RateLimitDecision
from app.ratelimit.local import LocalLimiter
from app.ratelimit.redis import RedisLimiter, connect
from tests.conftest import SentinelGroup

PASSWORD = "s3cret-sentinel-pass"


def _checks(group: SentinelGroup, url: str, count: int) -> tuple[list[RateLimitDecision], bool]:
    """`count` checks of one client through the group's sentinel, and then a readiness ping."""

    async def run() -> tuple[list[RateLimitDecision], bool]:
        client = connect(url, 0.5, [("127.0.0.1", group.port)], group.SERVICE)
        limiter = RedisLimiter(client, 5, 60, fallback=LocalLimiter(5, 60))
        try:
            return [await limiter.hit("client") for _ in range(count)], await limiter.ping()
        finally:
            await limiter.close()

    return asyncio.run(run())


def test_counts_land_in_the_url_database_behind_a_password(
    sentinel_group: Callable[..., SentinelGroup],
) -> None:
    """requirepass + masterauth + auth-pass: the master the sentinel names gets the counts in
    REDIS_URL's database 3, logged in with REDIS_URL's password; its host is never dialled."""
    group = sentinel_group(password=PASSWORD)
    decisions, ready = _checks(group, f"redis://:{PASSWORD}@ignored.invalid:1/3", 3)
    assert [(d.allowed, d.remaining, d.degraded) for d in decisions] == [
        (True, 4, False),
        (True, 3, False),
        (True, 2, False),
    ]
    assert ready
    master, replica = group.servers
    assert group.master() is master
    assert group.client(master, db=3).zcard("kvkit:rl:client") == 3
    assert group.client(master, db=0).dbsize() == 0
    deadline = time.monotonic() + 5  # the replica logs in with masterauth and copies them
    while group.client(replica, db=3).zcard("kvkit:rl:client") != 3:
        assert time.monotonic() < deadline, "the replica never received the counts"
        time.sleep(0.05)


def test_a_wrong_password_fails_open_and_is_not_ready(
    sentinel_group: Callable[..., SentinelGroup],
) -> None:
    """With a wrong password every check is decided by the fallback and the ping fails."""
    group = sentinel_group(password=PASSWORD)
    decisions, ready = _checks(group, "redis://:not-the-password@ignored.invalid:1/3", 3)
    assert all(d.degraded and d.allowed for d in decisions)
    assert not ready
    assert group.client(group.master(), db=3).dbsize() == 0
