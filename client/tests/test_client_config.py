"""What callers can set: retried statuses and methods, per-call overrides, the on_retry hook,
and the public testing switch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

import kvclient
from kvclient import RetryEvent, RetryPolicy, ServerError, ServiceUnavailable, Testing

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient


def test_on_retry_hook_receives_attempt_reason_and_delay(
    make_client: MakeClient, server: FaultServer, clock: Testing
) -> None:
    """The hook is called once per retry, before its sleep, with what the log line says."""
    events: list[RetryEvent] = []
    client = make_client(retry=RetryPolicy(jitter=False), on_retry=events.append)
    server.problem(503, "service_unavailable", times=2)
    client.create("k", 1)
    assert [(e.attempt, e.reason, e.delay) for e in events] == [
        (1, "status_503", 0.1),
        (2, "status_503", 0.2),
    ]
    assert all(isinstance(e.error, ServiceUnavailable) for e in events)
    assert events[0].route == "/v1/items" and events[0].method == "POST"


def test_retried_statuses_are_settable(make_client: MakeClient, server: FaultServer) -> None:
    """A policy that adds 500 to retry_statuses retries it; the default does not."""
    client = make_client(retry=RetryPolicy(retry_statuses=frozenset({500, 503})))
    server.problem(500, "internal_error")
    client.create("k", 1)
    assert len(server.requests) == 2
    server.problem(502, "bad_gateway")
    with pytest.raises(ServerError):
        client.get("k")


def test_retried_methods_are_settable(make_client: MakeClient, server: FaultServer) -> None:
    """Without GET among retry_methods a read timeout on a GET is not resent."""
    client = make_client(timeout=(1.0, 0.2), retry=RetryPolicy(retry_methods=frozenset({"PUT"})))
    server.stall(3.0)
    with pytest.raises(kvclient.ReadTimeout):
        client.get("k")
    assert len(server.requests) == 1


def test_per_call_retry_overrides_the_clients_policy(
    make_client: MakeClient, server: FaultServer
) -> None:
    """retry= on one call replaces the client's policy for that call only."""
    client = make_client(retry=RetryPolicy(max_attempts=5))
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get("k", retry=RetryPolicy(max_attempts=2))
    assert caught.value.attempts == 2
    assert len(server.requests) == 2


def test_per_call_timeout_overrides_the_clients_timeout(
    make_client: MakeClient, server: FaultServer
) -> None:
    """timeout= on one call bounds that call's reads."""
    client = make_client(timeout=(1.0, 5.0), retry=RetryPolicy(max_attempts=1))
    server.stall(3.0)
    started = time.monotonic()
    with pytest.raises(kvclient.ReadTimeout):
        client.get("k", timeout=0.2)
    assert time.monotonic() - started < 2.0


def test_pool_size_is_validated(make_client: MakeClient) -> None:
    """pool_size must be a positive int."""
    with pytest.raises(kvclient.InvalidArgument):
        make_client(pool_size=0)
    assert make_client(pool_size=2).get is not None


def test_set_testing_skips_sleeps_and_restores_the_mode(server: FaultServer) -> None:
    """set_testing(True) records sleeps instead of sleeping; leaving its context turns it off."""
    assert not kvclient.is_testing()
    with kvclient.set_testing(True, seed=7) as testing:
        assert testing is not None and kvclient.is_testing()
        with kvclient.KVClient(server.url, retry=RetryPolicy(jitter=False)) as client:
            server.problem(503, "service_unavailable", headers={"Retry-After": "20"})
            started = time.monotonic()
            client.create("k", 1)
        assert time.monotonic() - started < 5.0
        assert testing.sleeps == [20.0]
    assert not kvclient.is_testing()


def test_testing_seed_makes_jitter_reproducible(
    make_client: MakeClient, server: FaultServer
) -> None:
    """Two runs in testing mode with the same seed sleep the same jittered delays."""
    runs: list[list[float]] = []
    for _ in range(2):
        with kvclient.set_testing(True, seed=99) as testing:
            assert testing is not None
            client: Any = make_client()
            server.problem(503, "service_unavailable", times=3)
            client.create(f"k{len(runs)}", 1)
            runs.append(testing.sleeps)
    assert runs[0] == runs[1] and len(runs[0]) == 3
