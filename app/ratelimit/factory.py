"""Choose the limiter the settings ask for."""

from __future__ import annotations

from app.config import Settings
from app.ratelimit.local import LocalLimiter
from app.ratelimit.redis import RedisLimiter, connect


def build_limiter(settings: Settings) -> LocalLimiter | RedisLimiter:
    """Redis when REDIS_URL is set (exact across processes), else in-process."""
    limit, window = settings.rate_limit
    local = LocalLimiter(limit, window)
    if not settings.redis_url:
        return local
    return RedisLimiter(
        connect(settings.redis_url.get_secret_value(), settings.redis_timeout),
        limit,
        window,
        fallback=local,
        on_error=settings.rate_limit_on_redis_error,
    )
