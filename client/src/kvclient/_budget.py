"""A retry budget: a token bucket that keeps retries a small fraction of a client's traffic.

Per-call attempt limits do not stop a fleet of clients from multiplying the load on a failing
service by `max_attempts`. The budget does: every logical call deposits `deposit` tokens, every
retry withdraws one, and a slow refill lets a quiet client still retry now and then. When the bucket
is empty, first attempts still go out but retries stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from . import _testing

CAPACITY = 10.0
"""Most tokens the bucket holds, i.e. the largest burst of retries after a quiet period."""
DEPOSIT = 0.1
"""Tokens each logical call adds: in steady failure about one retry per ten calls."""
REFILL_PER_SECOND = 1.0
"""Tokens added per second regardless of traffic, so a low-traffic client can still retry."""


class RetryBudget:
    """Thread-safe token bucket shared by all calls of one client; starts full."""

    def __init__(
        self,
        *,
        capacity: float = CAPACITY,
        deposit: float = DEPOSIT,
        refill_per_second: float = REFILL_PER_SECOND,
        clock: Callable[[], float] = _testing.monotonic,
    ) -> None:
        self._capacity = capacity
        self._deposit = deposit
        self._refill_per_second = refill_per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = capacity
        self._updated = clock()

    @property
    def tokens(self) -> float:
        """Tokens available right now."""
        with self._lock:
            return self._refill()

    def record_call(self) -> float:
        """Credit one logical call (its first attempt) and return the tokens now available."""
        with self._lock:
            self._tokens = min(self._capacity, self._refill() + self._deposit)
            return self._tokens

    def try_spend(self) -> bool:
        """Withdraw one token for a retry; False, withdrawing nothing, when the bucket is empty."""
        with self._lock:
            # The tolerance keeps ten deposits of 0.1 worth one token despite float rounding.
            if self._refill() < 1.0 - 1e-9:
                return False
            self._tokens = max(0.0, self._tokens - 1.0)
            return True

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._capacity, self._tokens + elapsed * self._refill_per_second)
        return self._tokens
