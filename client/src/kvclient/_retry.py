"""The retry policy value object and its backoff arithmetic."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from . import _testing
from ._exceptions import InvalidArgument, UnsupportedType

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times and how patiently one logical call is retried; immutable so it can be shared.

    Defaults: 5 attempts in all (the first included), full-jitter exponential backoff starting at
    0.1 s and doubling up to 10 s, `Retry-After` honoured as a floor up to 120 s, and 30 s for the
    whole call. The 30 s fit inside the 60 s a load balancer in front of the caller typically
    allows one request, and leave room for two full attempts at the default 3.05 + 10 s timeouts.
    """

    max_attempts: int = 5
    """Attempts per logical call, the first included; 1 disables retries."""
    base_delay: float = 0.1
    """Seconds of the first backoff step before jitter."""
    max_delay: float = 10.0
    """Upper bound of any exponential backoff step, in seconds."""
    multiplier: float = 2.0
    """Growth factor of the backoff between retries."""
    jitter: bool = True
    """Draw each delay uniformly from [0, step] ("full jitter") so clients spread out."""
    respect_retry_after: bool = True
    """Wait at least the server's `Retry-After` before the next attempt."""
    deadline: float = 30.0
    """Seconds for the whole logical call, sleeps and response bodies included; always finite."""
    max_retry_after: float = 120.0
    """Longest `Retry-After` (or RateLimit reset) waited for; a longer one fails at once."""
    min_attempt_time: float = 0.05
    """A retry is not started with less than this left of the deadline: it could not succeed."""
    retry_statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)
    """Response statuses retried (409 idempotency_in_progress is retried whatever this says)."""
    retry_methods: frozenset[str] = field(default=IDEMPOTENT_METHODS)
    """Methods resent after a failure that may have reached the server (read timeout, lost
    connection); any method carrying an Idempotency-Key is resent too."""
    budget_capacity: float = 10.0
    """Most tokens in the client's retry budget (its largest burst of retries); read by the
    client from the policy it was built with."""
    budget_deposit: float = 0.1
    """Tokens each logical call adds to the budget."""
    budget_refill_per_second: float = 1.0
    """Tokens added per second regardless of traffic."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise UnsupportedType(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.multiplier < 1:
            raise InvalidArgument(f"multiplier must be >= 1, got {self.multiplier}")
        for name in (
            "base_delay",
            "max_delay",
            "max_retry_after",
            "min_attempt_time",
            "budget_capacity",
            "budget_deposit",
            "budget_refill_per_second",
        ):
            _check_seconds(name, getattr(self, name), allow_zero=True)
        _check_seconds("deadline", self.deadline, allow_zero=False)
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))
        object.__setattr__(self, "retry_methods", frozenset(m.upper() for m in self.retry_methods))

    def backoff(
        self,
        retry_number: int,
        *,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to sleep before retry `retry_number` (0 for the first retry).

        Without `retry_after` this is min(max_delay, base_delay * multiplier**n), drawn uniformly
        from [0, that] when `jitter` is on. A `retry_after` (only passed when it is respected)
        replaces that value as a floor: the jitter, if on, is added on top of it so that clients
        told the same instant do not all return together.
        """
        try:
            step = min(self.max_delay, self.base_delay * self.multiplier**retry_number)
        except OverflowError:
            step = self.max_delay
        spread = (rng or _testing.rng()).uniform(0.0, step) if self.jitter else step
        if retry_after is None:
            return spread
        return retry_after + (spread if self.jitter else 0.0)


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedType(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgument(f"{name} must be a finite number {bound}, got {value!r}")
