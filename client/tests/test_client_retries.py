"""Retries over a real socket: what is retried, how long the client waits, when it stops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from kvclient import (
    APIError,
    ConnectError,
    RateLimited,
    ReadTimeout,
    RetryPolicy,
    ServiceUnavailable,
    Testing,
    TransportError,
)
from kvclient._core import Call

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient

NO_JITTER = RetryPolicy(jitter=False)


def test_503_twice_then_success_reuses_both_ids(
    client: Any, server: FaultServer, clock: Testing
) -> None:
    """A write that meets 503 twice succeeds on attempt 3, sending the same ids each time."""
    server.problem(503, "service_unavailable", times=2)
    item = client.create("k", "v")
    assert item.version == 1
    assert len(server.requests) == 3
    assert len({r.headers.get("Idempotency-Key") for r in server.requests}) == 1
    assert len({r.headers.get("X-Request-ID") for r in server.requests}) == 1
    assert len(clock.sleeps) == 2
    assert server.kv.writes == [("POST", "k")]


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried(client: Any, server: FaultServer, status: int) -> None:
    """502 and 504 from a proxy are retried like 503."""
    server.respond(status, times=1)
    client.create("k", "v")
    assert len(server.requests) == 2


def test_429_retry_after_is_waited_out_on_the_clock(
    client: Any, server: FaultServer, clock: Testing
) -> None:
    """`Retry-After: 2` on a 429 makes the client sleep at least 2 s before retrying."""
    server.problem(429, "rate_limited", headers={"Retry-After": "2"})
    client.create("k", 1)
    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1
    assert 2.0 <= clock.sleeps[0] <= 2.0 + RetryPolicy().base_delay


@pytest.mark.parametrize(
    "retry_after",
    ["Tue, 01 Jul 2025 10:00:03 GMT", "Tue, 01 Jul 2025 12:00:03 +0200"],
    ids=["gmt", "offset"],
)
def test_http_date_retry_after_is_honoured(
    make_client: MakeClient, server: FaultServer, clock: Testing, retry_after: str
) -> None:
    """An HTTP-date Retry-After, in GMT or with an offset, counts from the server's Date header."""
    client = make_client(retry=NO_JITTER)
    headers = {"Date": "Tue, 01 Jul 2025 10:00:00 GMT", "Retry-After": retry_after}
    server.problem(503, "service_unavailable", headers=headers)
    client.create("k", 1)
    assert clock.sleeps == [3.0]


def test_retry_after_can_be_ignored(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """respect_retry_after=False falls back to the exponential delay."""
    client = make_client(retry=RetryPolicy(jitter=False, respect_retry_after=False))
    server.problem(429, "rate_limited", headers={"Retry-After": "30"})
    client.create("k", 1)
    assert clock.sleeps == [0.1]


def test_idempotency_in_progress_is_retried_after_its_retry_after(
    client: Any, server: FaultServer, clock: Testing
) -> None:
    """409 idempotency_in_progress is retried like a 429, waiting out its Retry-After."""
    server.problem(409, "idempotency_in_progress", headers={"Retry-After": "1"})
    client.create("k", 1)
    assert len(server.requests) == 2
    assert clock.sleeps[0] >= 1.0


def test_dropped_connection_after_the_body_is_retried_with_the_same_key(
    client: Any, server: FaultServer
) -> None:
    """A POST whose connection drops after the server read it is retried with the same key."""
    server.drop()
    item = client.create("k", "v")
    assert item.key == "k"
    assert [r.method for r in server.requests] == ["POST", "POST"]
    assert server.requests[0].body == server.requests[1].body
    first, second = (r.headers.get("Idempotency-Key") for r in server.requests)
    assert first is not None and first == second


def test_response_lost_to_a_read_timeout_writes_once(
    make_client: MakeClient, server: FaultServer
) -> None:
    """A write committed but answered too late is retried and replayed, never applied twice."""
    client = make_client(timeout=(1.0, 0.2))
    server.stall(5.0)
    item = client.create("k", "v")
    assert item.version == 1
    assert len(server.requests) == 2
    assert server.kv.writes == [("POST", "k")]


def test_read_timeout_on_update_is_retried_and_applied_once(
    make_client: MakeClient, server: FaultServer
) -> None:
    """An update that timed out after committing is replayed, so the version moves by one."""
    client = make_client(timeout=(1.0, 0.2))
    client.create("k", 1)
    server.stall(5.0)
    assert client.update("k", 2).version == 2
    assert server.kv.writes == [("POST", "k"), ("PUT", "k")]


def test_deadline_shrinks_the_read_timeout(make_client: MakeClient, server: FaultServer) -> None:
    """With a 0.3 s deadline an attempt times out at 0.3 s even though read timeout is 10 s."""
    client = make_client(timeout=(1.0, 10.0), retry=RetryPolicy(max_attempts=1, deadline=0.3))
    server.stall(3.0)
    with pytest.raises(ReadTimeout, match="read timeout"):
        client.get("k")


def test_connection_refused_is_retried_then_raises_transport_error(
    refused_url: str, make_client: MakeClient, clock: Testing
) -> None:
    """A port nobody listens on is retried up to max_attempts, then raises TransportError."""
    client = make_client(base_url=refused_url, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(ConnectError, match="connect error") as caught:
        client.get("k")
    assert caught.value.gave_up_reason == "max_attempts"
    assert caught.value.attempts == 3
    assert len(clock.sleeps) == 2


def test_max_attempts_bounds_the_attempts(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """Against a server that always fails, exactly max_attempts requests are sent."""
    client = make_client(retry=RetryPolicy(max_attempts=4, jitter=False))
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert len(server.requests) == 4
    assert clock.sleeps == [0.1, 0.2, 0.4]
    assert caught.value.gave_up_reason == "max_attempts"
    assert "gave up after 4 attempts: max_attempts reached" in str(caught.value)


def test_deadline_bounds_the_total_time(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """The client stops before a sleep would carry it past the deadline."""
    policy = RetryPolicy(max_attempts=100, base_delay=1.0, jitter=False, deadline=10.0)
    client = make_client(retry=policy)
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(server.requests) == 4
    assert clock.elapsed <= 10.0
    assert caught.value.gave_up_reason == "deadline"
    assert "deadline" in str(caught.value)


def test_retry_after_beyond_the_deadline_fails_at_once(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """A Retry-After longer than the time left raises immediately, carrying retry_after."""
    client = make_client(retry=RetryPolicy(deadline=5.0))
    server.problem(429, "rate_limited", headers={"Retry-After": "30"}, times=None)
    with pytest.raises(RateLimited) as caught:
        client.create("k", 1)
    assert len(server.requests) == 1
    assert clock.sleeps == []
    assert caught.value.retry_after == 30.0
    assert caught.value.gave_up_reason == "retry_after_exceeds_deadline"


def test_budget_caps_attempts_when_every_request_fails(
    make_client: MakeClient, server: FaultServer
) -> None:
    """100 calls against an always-503 server send at most 100 + the budget's tokens attempts."""
    # No refill by time: real time passes during the 100 calls, and only deposits should count.
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, budget_refill_per_second=0.0)
    client = make_client(retry=policy)
    server.problem(503, "service_unavailable", times=None)
    errors: list[APIError] = []
    for _ in range(100):
        with pytest.raises(ServiceUnavailable) as caught:
            client.get("k")
        errors.append(caught.value)
    # 10 tokens to start with, plus 0.1 per call.
    assert 100 < len(server.requests) <= 100 + 10 + 10
    assert errors[-1].gave_up_reason == "budget"
    assert "retry budget is exhausted" in str(errors[-1])
    assert errors[-1].attempts == 1


def test_budget_refills_with_time(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """After the budget ran dry, quiet time lets the client retry again."""
    client = make_client(retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    server.problem(503, "service_unavailable", times=None)
    reasons: list[str | None] = []
    while "budget" not in reasons and len(reasons) < 50:
        with pytest.raises(ServiceUnavailable) as caught:
            client.get("k")
        reasons.append(caught.value.gave_up_reason)
    assert reasons[-1] == "budget"
    clock.advance(5.0)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k")
    assert caught.value.gave_up_reason == "max_attempts"


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_unkeyed_post_is_not_resent_after_it_may_have_arrived(
    make_client: MakeClient, server: FaultServer, fault: str
) -> None:
    """Without an Idempotency-Key a POST that may have been applied is never sent again."""
    if fault == "drop":
        server.drop()
    else:
        server.stall(5.0)
    client = make_client(timeout=(1.0, 0.2))
    # The public methods always send a key, so drive the shared core with a call that has none.
    call = Call("POST", "/v1/items", "/v1/items", {}, "rid", b'{"key": "k", "value": 1}')
    with pytest.raises(TransportError) as caught:
        client._run(call, None, None)
    assert len(server.requests) == 1
    assert caught.value.gave_up_reason is None
