"""Rate-limit checks of one event-loop pass share a Redis pipeline, each with its own answer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.ratelimit.batching import ScriptBatcher
from app.ratelimit.redis import SCRIPT, SCRIPT_SHA, connect
from tests.conftest import PrivateRedis


def bucket() -> str:
    return f"kvkit:test:batch:{uuid.uuid4().hex}"


async def checks(url: str, calls: int, limit: int, key: str) -> tuple[list[list[int]], int]:
    client = connect(url, timeout=2.0)
    batcher = ScriptBatcher(client, SCRIPT, SCRIPT_SHA)
    try:
        replies = await asyncio.gather(
            *(batcher.run(key, limit, 60, f"m{n}") for n in range(calls))
        )
        return [list(map(int, reply)) for reply in replies], batcher.batches_answered
    finally:
        await client.aclose()


def test_concurrent_checks_travel_in_one_pipeline_and_stay_exact(redis_url: str) -> None:
    replies, pipelines = asyncio.run(checks(redis_url, calls=40, limit=30, key=bucket()))
    assert pipelines == 1
    allowed = [reply for reply in replies if reply[0] == 1]
    assert len(allowed) == 30
    # Each allowed check saw its own place in the window: remaining counts down 29..0.
    assert sorted(reply[1] for reply in allowed) == list(range(30))
    assert all(reply[1] == 0 for reply in replies if reply[0] == 0)


def test_a_lone_check_is_sent_alone(redis_url: str) -> None:
    replies, pipelines = asyncio.run(checks(redis_url, calls=1, limit=5, key=bucket()))
    assert (replies, pipelines) == ([[1, 4, replies[0][2]]], 1)


def test_a_flushed_script_is_loaded_again_for_the_whole_batch(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).script_flush()
    replies, pipelines = asyncio.run(checks(redis_url, calls=10, limit=100, key=bucket()))
    assert [reply[0] for reply in replies] == [1] * 10
    assert pipelines == 1  # one batch: its calls were rerun after SCRIPT LOAD
    assert redis.Redis.from_url(redis_url).script_exists(SCRIPT_SHA) == [True]


def test_every_caller_of_a_failed_round_trip_gets_the_error(
    private_redis: PrivateRedis,
) -> None:
    async def run() -> list[BaseException | object]:
        client: Redis = connect(private_redis.url, timeout=0.5)
        batcher = ScriptBatcher(client, SCRIPT, SCRIPT_SHA)
        private_redis.stop()
        try:
            return await asyncio.wait_for(
                asyncio.gather(
                    *(batcher.run(bucket(), 5, 60, f"m{n}") for n in range(8)),
                    return_exceptions=True,
                ),
                timeout=10,
            )
        finally:
            await client.aclose()

    outcomes = asyncio.run(run())
    assert len(outcomes) == 8
    assert all(isinstance(outcome, (RedisConnectionError, OSError)) for outcome in outcomes)


@pytest.mark.parametrize("calls", [3, 25])
def test_bucket_of_each_call_is_its_own(redis_url: str, calls: int) -> None:
    """Checks of different clients in one pipeline never count against each other."""

    async def run() -> list[list[int]]:
        client = connect(redis_url, timeout=2.0)
        batcher = ScriptBatcher(client, SCRIPT, SCRIPT_SHA)
        try:
            keys = [bucket() for _ in range(calls)]
            replies = await asyncio.gather(*(batcher.run(key, 1, 60, "m") for key in keys))
            return [list(map(int, reply)) for reply in replies]
        finally:
            await client.aclose()

    assert [reply[:2] for reply in asyncio.run(run())] == [[1, 0]] * calls
