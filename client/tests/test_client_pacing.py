"""Pacing: after the service said no requests remain (RateLimit r=0), the next call waits for
the reset, or fails at once when the reset is past its deadline: never a certain 429."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from kvclient import KVClient, RateLimited, RetryPolicy, Testing, WouldBeRateLimited

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient, Service

EXHAUSTED = {"RateLimit": '"default";r=0;t=3', "Content-Type": "application/json"}


def _exhausting_answer(server: FaultServer) -> None:
    """Answer the next request normally but announce that no requests remain for 3 s."""

    def act(handler: Any, request: Any) -> None:
        answer = server.kv.handle(request)
        handler.write(type(answer)(answer.status, {**answer.headers, **EXHAUSTED}, answer.body))

    server._add(act, 1)


def test_next_call_waits_for_the_announced_reset(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """After r=0;t=3 the next call sleeps 3 s before sending, and is not refused."""
    client = make_client()
    _exhausting_answer(server)
    client.create("k", 1)
    assert clock.sleeps == []
    client.get("k")
    assert clock.sleeps == [pytest.approx(3.0, abs=0.1)]
    assert len(server.requests) == 2


def test_reset_past_the_deadline_fails_at_once_without_sending(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """When the reset is later than the deadline the call raises WouldBeRateLimited, unsent."""
    client = make_client(retry=RetryPolicy(deadline=2.0))
    _exhausting_answer(server)
    client.create("k", 1)
    with pytest.raises(WouldBeRateLimited) as caught:
        client.get("k")
    assert len(server.requests) == 1
    assert clock.sleeps == []
    assert caught.value.gave_up_reason == "rate_limit_exceeds_deadline"
    assert caught.value.retry_after == pytest.approx(3.0, abs=0.1)


def test_pacing_can_be_turned_off(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """pacing=False sends at once whatever the last RateLimit said."""
    client = make_client(pacing=False)
    _exhausting_answer(server)
    client.create("k", 1)
    client.get("k")
    assert clock.sleeps == []


def test_remaining_requests_clear_the_wait(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """A later response with r>0 lifts the wait an earlier r=0 imposed."""
    client = make_client()
    _exhausting_answer(server)
    client.create("k", 1)
    clock.advance(3.0)
    server.respond(
        200,
        body=b'{"key":"k","value":1,"version":1,"created_at":"2025-01-01T00:00:00Z",'
        b'"updated_at":"2025-01-01T00:00:00Z"}',
        headers={"RateLimit": '"default";r=9;t=60', "Content-Type": "application/json"},
    )
    client.get("k")
    client.get("k")
    assert clock.sleeps == []


@pytest.mark.parametrize("pacing", [True, False], ids=["paced", "unpaced"])
def test_burst_against_the_real_service_never_draws_a_429_when_paced(
    kvkit_service: Callable[..., Service], pacing: bool
) -> None:
    """80 calls at 60/minute: 60 succeed; paced, the other 20 fail at once unsent and the
    service answers no 429; unpaced, each of the 20 is a 429 on the wire."""
    service = kvkit_service(KV_RATE_LIMIT="60/minute")
    policy = RetryPolicy(deadline=2.0, max_attempts=1)
    successes, paced, refused = 0, 0, 0
    with KVClient(
        service.url, retry=policy, pacing=pacing, registry=CollectorRegistry(), name="burst"
    ) as client:
        for n in range(80):
            try:
                client.list(limit=1, prefix=f"burst{n}")
            except WouldBeRateLimited as exc:
                assert exc.gave_up_reason == "rate_limit_exceeds_deadline"
                paced += 1
            except RateLimited:
                refused += 1
            else:
                successes += 1
    limited = service.metric("kvkit_ratelimit_decisions_total", outcome="limited")
    assert successes == 60
    if pacing:
        assert (paced, refused, limited) == (20, 0, 0.0)
    else:
        assert (paced, refused, limited) == (0, 20, 20.0)
