"""The shared limiter: one EVALSHA per request (pipelined per loop pass), exact across workers
and replicas."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from app.ids import UniqueIds
from app.observability.metrics import observe_redis
from app.ratelimit.batching import ScriptBatcher
from app.ratelimit.decision import LimiterUnavailable, RateLimitDecision
from app.ratelimit.local import LocalLimiter

logger = logging.getLogger("kvkit.ratelimit")

# What a Redis call raises when Redis is unreachable or a connection broke: redis-py's errors,
# socket errors, and, under uvloop, RuntimeError from a write to a pooled connection whose
# transport a reset closed ("unable to perform operation on <TCPTransport closed=True>").
REDIS_FAILURES = (RedisError, OSError, RuntimeError)


SCRIPT = resources.files("app.ratelimit").joinpath("sliding_log.lua").read_text()
# The name Redis gives the script (SCRIPT LOAD answers the same SHA-1).
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
# After a failure Redis is left alone this long: an outage costs one timeout, not one per request.
COOLDOWN_SECONDS = 1.0
# With Sentinel, how often each process asks the sentinels where the master is (see MasterPool).
FOLLOW_SECONDS = 0.5
# Sorted-set members must be unique per request across every process.
_members = UniqueIds()


def connect(
    url: str, timeout: float, sentinels: Sequence[tuple[str, int]] = (), master: str = ""
) -> Redis:
    """A client that fails within `timeout` and never retries by itself (defaults: 5 s, retries).

    With `sentinels`, it talks to the master they name for `master`; `url` then gives the
    database, the credentials and TLS (rediss://: to the sentinels as well), not host and port.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }
    if not sentinels:
        return Redis.from_url(url, **options)
    params: dict[str, Any] = {**options, **parse_url(url)}
    params.pop("host", None)
    params.pop("port", None)
    tls = params.pop("connection_class", None) is SSLConnection
    tls_options = {name: value for name, value in params.items() if name.startswith("ssl_")}
    # Sentinels get the timeouts and TLS, never the master's password or database (nor
    # retry_on_timeout, which Redis() deprecates: with no retries it changes nothing).
    sentinel_options = {
        name: value for name, value in options.items() if name != "retry_on_timeout"
    }
    sentinel = Sentinel(sentinels, sentinel_kwargs={**sentinel_options, "ssl": tls, **tls_options})
    client: Redis = sentinel.master_for(master, connection_pool_class=MasterPool, ssl=tls, **params)
    return client


class MasterPool(SentinelConnectionPool):
    """Connections to the master the sentinels name, left as soon as they name another one.

    redis-py asks the sentinels only when it opens a connection, and pooled connections stay
    with the old master after a failover until Sentinel turns it into a replica (ten seconds
    and more): counts written there in between are lost. The limiter therefore asks again every
    FOLLOW_SECONDS, and a move closes idle connections and retires busy ones when released.
    """

    async def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = await self.sentinel_manager.discover_master(self.service_name)
        previous = self.master_address
        if address != previous:
            self.master_address = address
            if previous is not None:  # else no connection has been opened yet
                logger.warning(
                    "Redis master of %r moved from %s:%s to %s:%s; the limiter follows",
                    self.service_name,
                    *previous,
                    *address,
                )
                await self.update_active_connections_for_reconnect()
                await self.disconnect(inuse_connections=False)
        return address


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
        pool = redis.connection_pool
        self._master_pool = pool if isinstance(pool, MasterPool) else None
        self._follow_at = 0.0
        self._following: asyncio.Task[None] | None = None

    async def hit(self, client: str) -> RateLimitDecision:
        now = time.monotonic()
        if self._master_pool is not None and now >= self._follow_at:
            self._follow_soon(self._master_pool, now)
        if now >= self._down_until:
            try:
                allowed, remaining, reset_us = await self._batcher.run(
                    f"kvkit:rl:{client}", self.limit, self.window, _members.next()
                )
            except REDIS_FAILURES as exc:
                self._mark_down(exc)
                if isinstance(exc, RuntimeError):
                    await self._drop_connections()
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
        """Whether Redis answers; with Sentinel, the master the sentinels name right now."""
        try:
            with observe_redis("ping"):
                if self._master_pool is not None:
                    await self._master_pool.get_master_address()
                await self.redis.ping()
        except REDIS_FAILURES as exc:
            if isinstance(exc, RuntimeError):
                await self._drop_connections()
            return False
        return True

    async def _drop_connections(self) -> None:
        """Close the idle pooled connections: redis-py drops a connection after its own errors,
        not after a RuntimeError, and one left in the pool would fail again at each use. Those
        in use are left alone: closing one another task is connecting breaks that task."""
        with contextlib.suppress(*REDIS_FAILURES):
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    def _follow_soon(self, pool: MasterPool, now: float) -> None:
        """Ask the sentinels in the background: a check never waits for them."""
        self._follow_at = now + FOLLOW_SECONDS
        if self._following is None or self._following.done():
            self._following = asyncio.create_task(self._follow(pool))

    @staticmethod
    async def _follow(pool: MasterPool) -> None:
        try:
            await pool.get_master_address()
        except REDIS_FAILURES as exc:
            # Checks go on with the connections they have; a new one fails, and hit() reports it.
            logger.debug("sentinels named no master: %s: %s", type(exc).__name__, exc)

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
        if self._following is not None:
            self._following.cancel()
        await self.redis.aclose()
        if self._master_pool is not None:
            await self._master_pool.sentinel_manager.aclose()
