"""The in-process limiter: exact per process, used alone without Redis and as Redis's fallback."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from app.ratelimit.decision import RateLimitDecision

_SWEEP_EVERY = 1024


class LocalLimiter:
    """A sliding log per client: at most `limit` requests in any `window` seconds, no double burst.

    Runs on the event loop only, so it needs no lock.
    """

    def __init__(
        self, limit: int, window: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}
        self._calls = 0

    async def hit(self, client: str) -> RateLimitDecision:
        return self.check(client)

    def check(self, client: str, *, degraded: bool = False) -> RateLimitDecision:
        now = self._clock()
        log = self._logs.setdefault(client, deque())
        _expire(log, now - self.window)
        allowed = len(log) < self.limit
        if allowed:
            log.append(now)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        return RateLimitDecision(
            allowed=allowed,
            limit=self.limit,
            window=self.window,
            remaining=self.limit - len(log),
            reset_after=log[0] + self.window - now if log else self.window,
            degraded=degraded,
        )

    def _sweep(self, now: float) -> None:
        """Forget idle clients so memory stays bounded by the active ones."""
        for client in [
            c for c, log in self._logs.items() if not log or log[-1] <= now - self.window
        ]:
            del self._logs[client]


def _expire(log: deque[float], cutoff: float) -> None:
    while log and log[0] <= cutoff:
        log.popleft()
