"""Choose the limiter the settings ask for."""

from __future__ import annotations

from app.config import Settings
from app.ratelimit.local import LocalLimiter
from app.ratelimit.redis import RedisLimiter, connect


def build_limiter(settings: Settings) -> LocalLimiter | RedisLimiter:
    """Redis when REDIS_URL or Sentinel is set (exact across processes), else in-process."""
    limit, window = settings.rate_limit
    local = LocalLimiter(limit, window)
    if not (settings.redis_url or settings.redis_sentinels):
        return local
    # With Sentinel alone: database 0, no password, plain TCP.
    url = settings.redis_url.get_secret_value() if settings.redis_url else "redis://"
    return RedisLimiter(
        connect(
            url,
            settings.redis_timeout,
            settings.redis_sentinels,
            settings.redis_sentinel_master or "",
        ),
        limit,
        window,
        fallback=local,
        on_error=settings.rate_limit_on_redis_error,
    )
