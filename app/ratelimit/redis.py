"""The shared limiter: one EVALSHA per request (pipelined per loop pass), exact across workers
and replicas."""

from __future__ import annotations

import hashlib
import logging
import time
from importlib import resources
from typing import Literal

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from app.ids import UniqueIds
from app.observability.metrics import observe_redis
from app.ratelimit.batching import ScriptBatcher
from app.ratelimit.decision import LimiterUnavailable, RateLimitDecision
from app.ratelimit.local import LocalLimiter

logger = logging.getLogger("kvkit.ratelimit")

SCRIPT = resources.files("app.ratelimit").joinpath("sliding_log.lua").read_text()
# The name Redis gives the script (SCRIPT LOAD answers the same SHA-1).
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
# After a failure Redis is left alone this long: an outage costs one timeout, not one per request.
COOLDOWN_SECONDS = 1.0
# Sorted-set members must be unique per request across every process.
_members = UniqueIds()


def connect(url: str, timeout: float) -> Redis:
    """A client that fails within `timeout` and never retries by itself (defaults: 5 s, retries)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


class RedisLimiter:
    """Sliding log in Redis; on Redis failure applies the configured policy."""

    def __init__(
        self,
        redis: Redis,
        limit: int,
        window: int,
        fallback: LocalLimiter,
        on_error: Literal["open", "closed"] = "open",
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.window = window
        self.fallback = fallback
        self.on_error = on_error
        self._batcher = ScriptBatcher(redis, SCRIPT, SCRIPT_SHA)
        self._down_until = 0.0
        self.healthy = True

    async def hit(self, client: str) -> RateLimitDecision:
        if time.monotonic() >= self._down_until:
            try:
                allowed, remaining, reset_us = await self._batcher.run(
                    f"kvkit:rl:{client}", self.limit, self.window, _members.next()
                )
            except (RedisError, OSError) as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return RateLimitDecision(
                    allowed=bool(allowed),
                    limit=self.limit,
                    window=self.window,
                    remaining=int(remaining),
                    reset_after=int(reset_us) / 1_000_000,
                )
        if self.on_error == "closed":
            raise LimiterUnavailable("Redis is unavailable and KV_RATE_LIMIT_ON_REDIS_ERROR=closed")
        return self.fallback.check(client, degraded=True)

    async def ping(self) -> bool:
        try:
            with observe_redis("ping"):
                await self.redis.ping()
        except (RedisError, OSError):
            return False
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + COOLDOWN_SECONDS
        if self.healthy:
            self.healthy = False
            logger.warning(
                "rate limiter cannot reach Redis (%s: %s); policy %s until it returns",
                type(exc).__name__,
                exc,
                self.on_error,
            )

    def _mark_up(self) -> None:
        if not self.healthy:
            self.healthy = True
            logger.warning("rate limiter reached Redis again; shared limits restored")

    async def close(self) -> None:
        await self.redis.aclose()
