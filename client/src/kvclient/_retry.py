"""The retry policy value object, its backoff arithmetic and Retry-After parsing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# One process-wide source is enough for jitter; it need not be unpredictable, only spread out.
_DEFAULT_RNG = random.Random()  # noqa: S311  # nosec B311  # jitter need not be unpredictable


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times and how patiently one logical call is retried; immutable so it can be shared.

    Defaults: 5 attempts in all (the first included), full-jitter exponential backoff starting at
    0.1 s and doubling up to 10 s, `Retry-After` honoured as a floor, and no overall deadline.
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
    deadline: float | None = None
    """Seconds for the whole logical call, sleeps included; None means only `max_attempts` binds."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0:
            raise ValueError(f"base_delay must be >= 0, got {self.base_delay}")
        if self.max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, got {self.max_delay}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"deadline must be > 0 or None, got {self.deadline}")

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
        spread = (rng or _DEFAULT_RNG).uniform(0.0, step) if self.jitter else step
        if retry_after is None:
            return spread
        return retry_after + (spread if self.jitter else 0.0)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delay-seconds or HTTP-date), None if unusable.

    RFC 9110 section 10.2.3 allows both forms; the date is accepted in any zone that
    `email.utils` understands, and a date in the past means "retry now".
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (_aware(when) - _aware(now)).total_seconds())


def _aware(moment: datetime) -> datetime:
    # email.utils returns a naive datetime for "-0000", which RFC 5322 defines as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
