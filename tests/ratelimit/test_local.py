"""The in-process sliding log and the headers a decision produces."""

from __future__ import annotations

import random

from app.ratelimit.decision import RateLimitDecision
from app.ratelimit.local import LocalLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_never_more_than_the_limit_in_any_rolling_window() -> None:
    """Random arrivals: every window of `window` seconds holds at most `limit` allowed requests."""
    clock = FakeClock()
    limiter = LocalLimiter(limit=10, window=5, clock=clock)
    rng = random.Random(7)
    allowed: list[float] = []
    for _ in range(3000):
        clock.now += rng.expovariate(4.0)
        if limiter.check("c").allowed:
            allowed.append(clock.now)
    assert len(allowed) > 100
    for i, start in enumerate(allowed):
        in_window = [t for t in allowed[i:] if t < start + 5]
        assert len(in_window) <= 10


def test_no_double_burst_at_a_window_boundary() -> None:
    """A full burst just before a fixed-window boundary does not buy a second burst after it."""
    clock = FakeClock()
    limiter = LocalLimiter(limit=60, window=60, clock=clock)
    clock.now = 59.5
    assert all(limiter.check("c").allowed for _ in range(60))
    clock.now = 60.5
    assert not limiter.check("c").allowed
    clock.now = 119.6
    assert limiter.check("c").allowed


def test_remaining_and_reset_describe_the_window() -> None:
    """Remaining counts down; reset is the time until the oldest request leaves the window."""
    clock = FakeClock()
    limiter = LocalLimiter(limit=3, window=60, clock=clock)
    first = limiter.check("c")
    clock.now += 10
    second = limiter.check("c")
    assert (first.remaining, second.remaining) == (2, 1)
    assert second.reset_after == 50
    limiter.check("c")
    refused = limiter.check("c")
    assert not refused.allowed and refused.remaining == 0 and refused.reset_seconds == 50


def test_clients_have_separate_buckets() -> None:
    """One client at its limit does not limit another."""
    limiter = LocalLimiter(limit=1, window=60, clock=FakeClock())
    assert limiter.check("a").allowed
    assert not limiter.check("a").allowed
    assert limiter.check("b").allowed


def test_idle_clients_are_forgotten() -> None:
    """Buckets of clients idle for a whole window are swept, so memory stays bounded."""
    clock = FakeClock()
    limiter = LocalLimiter(limit=5, window=1, clock=clock)
    for n in range(1023):
        limiter.check(f"client-{n}")
    clock.now += 2
    limiter.check("late")  # the 1024th call sweeps
    assert len(limiter._logs) == 1


def test_headers_follow_the_ietf_draft_and_legacy_fields() -> None:
    """Allowed: RateLimit-Policy/RateLimit plus the legacy trio, no Retry-After."""
    headers = RateLimitDecision(True, 60, 60, 59, 59.2).headers()
    assert headers == {
        "RateLimit-Policy": '"default";q=60;w=60',
        "RateLimit": '"default";r=59;t=60',
        "RateLimit-Limit": "60",
        "RateLimit-Remaining": "59",
        "RateLimit-Reset": "60",
    }


def test_refusal_carries_retry_after_equal_to_t_and_at_least_one() -> None:
    """Refused: Retry-After equals t, rounded up, never 0."""
    headers = RateLimitDecision(False, 60, 60, 0, 0.01).headers()
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit"] == '"default";r=0;t=1'
