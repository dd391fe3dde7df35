"""Bounded time: a finite default deadline, a Retry-After cap, and a deadline that holds even
against a server trickling its answer a byte at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from kvclient import RateLimited, ReadTimeout, RetryPolicy, ServiceUnavailable, Testing

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient, TrickleServer

# The "small constant" past the deadline: scheduling on a loaded two-core machine, no more
# (the old client took 34.7 s for a 1.5 s deadline against this server).
SLACK = 1.0


def test_default_policy_refuses_a_day_long_retry_after(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """With the default policy a `Retry-After: 86400` fails the call at once instead of
    sleeping a day."""
    client = make_client()
    server.problem(503, "service_unavailable", headers={"Retry-After": "86400"}, times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert clock.sleeps == []
    assert len(server.requests) == 1
    assert caught.value.gave_up_reason == "retry_after_exceeds_cap"
    assert caught.value.retry_after == 86400.0
    assert "max_retry_after" in str(caught.value)


def test_retry_after_beyond_the_default_deadline_fails_at_once(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """Under the cap but past the default 30 s deadline, a Retry-After also fails at once."""
    client = make_client()
    server.problem(429, "rate_limited", headers={"Retry-After": "45"}, times=None)
    with pytest.raises(RateLimited) as caught:
        client.get("k")
    assert clock.sleeps == []
    assert caught.value.gave_up_reason == "retry_after_exceeds_deadline"


def test_max_retry_after_is_settable(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """A policy with a larger cap and deadline waits out a long Retry-After."""
    client = make_client(retry=RetryPolicy(max_retry_after=600, deadline=900, jitter=False))
    server.problem(503, "service_unavailable", headers={"Retry-After": "300"})
    client.create("k", 1)
    assert clock.sleeps == [300.0]


def test_default_deadline_bounds_a_server_that_keeps_failing(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """With only defaults, retries stop before 30 s have been slept."""
    client = make_client(retry=RetryPolicy(max_attempts=1000, base_delay=1.0, jitter=False))
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert caught.value.gave_up_reason in {"deadline", "budget"}
    assert clock.elapsed <= 30.0


def test_no_attempt_is_started_without_time_to_succeed(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """A retry whose sleep would leave less than min_attempt_time gives up instead of sending
    an attempt with a 1 ms timeout."""
    policy = RetryPolicy(deadline=1.0, jitter=False, min_attempt_time=0.05)
    client = make_client(retry=policy)
    server.problem(503, "service_unavailable", headers={"Retry-After": "1"}, times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert len(server.requests) == 1
    assert clock.sleeps == []
    assert caught.value.gave_up_reason == "retry_after_exceeds_deadline"


def test_backoff_that_leaves_an_empty_attempt_gives_up_with_the_deadline_reason(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """A backoff ending 1 ms before the deadline is not slept: the call gives up at once."""
    policy = RetryPolicy(deadline=0.701, base_delay=0.1, jitter=False)
    client = make_client(retry=policy)
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    # 0.1 + 0.2 slept; the next 0.4 would leave about 1 ms, too little for an attempt.
    assert clock.sleeps == [0.1, 0.2]
    assert len(server.requests) == 3
    assert caught.value.gave_up_reason == "deadline"


@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "headers"])
def test_deadline_is_hard_against_a_trickling_server(
    make_client: MakeClient,
    trickle_server: Callable[..., TrickleServer],
    trickle_headers: bool,
) -> None:
    """A server sending a byte every 0.3 s cannot keep a call past its 1.5 s deadline,
    whether it trickles the body or the headers."""
    slow = trickle_server(0.3, 200, headers=trickle_headers)
    client: Any = make_client(
        base_url=slow.url, timeout=(1.0, 10.0), retry=RetryPolicy(deadline=1.5)
    )
    started = time.monotonic()
    with pytest.raises(ReadTimeout) as caught:
        client.get("k")
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + SLACK
    assert "deadline" in str(caught.value)
    assert caught.value.gave_up_reason == "deadline"
