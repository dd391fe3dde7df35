"""RetryPolicy: validation, immutability, backoff arithmetic and Retry-After parsing."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from kvclient import InvalidArgument, KVError, RetryPolicy, UnsupportedType
from kvclient._headers import parse_retry_after, rate_limit_wait

NOW = datetime(2025, 7, 1, 10, 0, 0, tzinfo=UTC)


def test_defaults_are_the_documented_values() -> None:
    """A bare RetryPolicy has the defaults its docstring promises."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay, policy.multiplier) == (
        5,
        0.1,
        10.0,
        2.0,
    )
    assert policy.jitter and policy.respect_retry_after
    assert (policy.deadline, policy.max_retry_after, policy.min_attempt_time) == (30.0, 120.0, 0.05)
    assert policy.retry_statuses == {429, 502, 503, 504}
    assert policy.retry_methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
    assert (policy.budget_capacity, policy.budget_deposit, policy.budget_refill_per_second) == (
        10.0,
        0.1,
        1.0,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"max_attempts": 0},
        {"base_delay": -0.1},
        {"max_delay": -1.0},
        {"multiplier": 0.5},
        {"deadline": 0},
        {"deadline": -3.0},
        {"deadline": float("inf")},
        {"deadline": float("nan")},
        {"max_retry_after": -1.0},
        {"budget_capacity": -1.0},
    ],
)
def test_invalid_fields_are_rejected(fields: dict[str, Any]) -> None:
    """Out-of-range fields raise ValueError when the policy is built, not when it is used."""
    with pytest.raises(InvalidArgument):
        RetryPolicy(**fields)


def test_non_integer_attempts_are_rejected() -> None:
    """max_attempts must be an int: 2.5 attempts is not a meaningful policy."""
    with pytest.raises(UnsupportedType):
        RetryPolicy(max_attempts=2.5)  # type: ignore[arg-type]


def test_policy_is_immutable() -> None:
    """Fields cannot be changed after construction, so one policy can be shared safely."""
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


def test_without_jitter_delays_are_exact_exponential_values() -> None:
    """jitter=False gives base_delay * multiplier**n for retry n."""
    policy = RetryPolicy(base_delay=0.5, multiplier=3.0, jitter=False)
    assert [policy.backoff(n) for n in range(4)] == [0.5, 1.5, 4.5, 10.0]


def test_max_delay_caps_every_delay() -> None:
    """No delay exceeds max_delay, however many retries came before (no overflow either)."""
    policy = RetryPolicy(base_delay=1.0, max_delay=3.0, jitter=False)
    assert [policy.backoff(n) for n in (0, 1, 2, 10, 5000)] == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_stays_within_bounds_and_varies() -> None:
    """With jitter each delay is drawn from [0, step], and the draws are spread out."""
    policy = RetryPolicy(base_delay=0.2, max_delay=1.0)
    rng = random.Random(7)
    for n, step in enumerate([0.2, 0.4, 0.8, 1.0, 1.0]):
        samples = [policy.backoff(n, rng=rng) for _ in range(500)]
        assert all(0.0 <= delay <= step for delay in samples)
        assert len(set(samples)) > 450
        assert min(samples) < step * 0.1 and max(samples) > step * 0.9


def test_seeded_random_source_reproduces_the_same_delays() -> None:
    """Two equally seeded random sources give the same jittered delays."""
    policy = RetryPolicy()
    first = [policy.backoff(n, rng=random.Random(42)) for n in range(5)]
    second = [policy.backoff(n, rng=random.Random(42)) for n in range(5)]
    assert first == second


def test_retry_after_without_jitter_is_the_exact_delay() -> None:
    """Without jitter a Retry-After replaces the exponential delay exactly, even a longer one."""
    policy = RetryPolicy(base_delay=1.0, jitter=False)
    assert policy.backoff(3, retry_after=2.0) == 2.0


def test_retry_after_is_a_floor_with_jitter_added_on_top() -> None:
    """With jitter the delay is retry_after plus at most the exponential step."""
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0)
    rng = random.Random(3)
    samples = [policy.backoff(1, retry_after=2.0, rng=rng) for _ in range(300)]
    assert all(2.0 <= delay <= 3.0 for delay in samples)
    assert len(set(samples)) > 250


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Tue, 01 Jul 2025 10:00:05 GMT", 5.0),
        ("Tue, 01 Jul 2025 12:00:04 +0200", 4.0),
        ("Tue, 01 Jul 2025 05:00:30 -0500", 30.0),
        ("Tue, 01 Jul 2025 09:00:00 GMT", 0.0),
    ],
)
def test_retry_after_forms_are_parsed(header: str, expected: float) -> None:
    """Delay-seconds and HTTP-dates in any zone become seconds from now; past dates mean now."""
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize("header", [None, "", "soon", "-1", "1.5e3", "²"])
def test_unusable_retry_after_is_ignored(header: str | None) -> None:
    """A missing or malformed Retry-After yields None rather than an exception."""
    assert parse_retry_after(header, now=NOW) is None


def test_policy_errors_are_the_clients_own_value_and_type_errors() -> None:
    """A bad policy raises a KVError that is also a ValueError or TypeError."""
    assert issubclass(InvalidArgument, KVError) and issubclass(InvalidArgument, ValueError)
    assert issubclass(UnsupportedType, KVError) and issubclass(UnsupportedType, TypeError)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"default";r=0;t=42', 42.0),
        ('"default";r=5;t=42', None),
        ('"default";r=0;t=7, "burst";r=0;t=3', 7.0),
        ('"default";r=3;t=7, "burst";r=0;t=3', 3.0),
        ('"default";r=0', None),
        ("garbage", None),
    ],
)
def test_ratelimit_header_gives_the_wait_only_when_exhausted(
    header: str, expected: float | None
) -> None:
    """RateLimit yields t seconds when a policy says r=0, nothing while requests remain."""
    assert rate_limit_wait({"RateLimit": header}) == expected
