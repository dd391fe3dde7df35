"""Prometheus metrics after scripted retries, read back from a fresh registry per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

from kvclient import KVClient, NotFound, RetryPolicy, ServiceUnavailable, TransportError

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient, Metric
    from prometheus_client import CollectorRegistry

NO_JITTER = RetryPolicy(jitter=False)


def test_retries_backoff_and_success_are_recorded(
    make_client: MakeClient, server: FaultServer, metric: Metric
) -> None:
    """Two 503s then success: 2 retries, 2 backoff observations, 1 successful call."""
    client = make_client(retry=NO_JITTER)
    server.problem(503, "service_unavailable", times=2)
    client.create("k", 1)
    assert metric("kvclient_retries_total", method="POST", reason="status_503") == 2
    assert metric("kvclient_backoff_seconds_count") == 2
    assert metric("kvclient_backoff_seconds_sum") == pytest.approx(0.1 + 0.2)
    assert metric("kvclient_requests_total", method="POST", outcome="success") == 1
    duration = {"method": "POST", "outcome": "success"}
    assert metric("kvclient_request_duration_seconds_count", **duration) == 1
    # The 0.3 s slept, plus however long three real requests took on a loaded machine.
    assert 0.3 <= metric("kvclient_request_duration_seconds_sum", **duration) < 2.3
    assert metric("kvclient_giveups_total", method="POST", reason="max_attempts") == 0


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (lambda s: s.problem(429, "rate_limited", headers={"Retry-After": "0"}), "status_429"),
        (lambda s: s.problem(409, "idempotency_in_progress"), "in_progress"),
        (lambda s: s.drop(), "connection_lost"),
        (lambda s: s.stall(5.0), "read_timeout"),
    ],
    ids=["429", "in_progress", "drop", "stall"],
)
def test_retry_reasons_name_the_failure(
    make_client: MakeClient,
    server: FaultServer,
    metric: Metric,
    script: Callable[[FaultServer], None],
    reason: str,
) -> None:
    """Each kind of retried failure is counted under its own reason label."""
    client = make_client(timeout=(1.0, 0.2))
    script(server)
    client.create("k", 1)
    assert metric("kvclient_retries_total", method="POST", reason=reason) == 1


def test_give_ups_and_http_errors_are_counted(
    make_client: MakeClient, server: FaultServer, metric: Metric
) -> None:
    """A call that exhausts max_attempts counts one give-up and one http_error outcome."""
    client = make_client(retry=RetryPolicy(max_attempts=2))
    server.problem(503, "service_unavailable", times=None)
    with pytest.raises(ServiceUnavailable):
        client.get("k")
    assert metric("kvclient_giveups_total", method="GET", reason="max_attempts") == 1
    assert metric("kvclient_requests_total", method="GET", outcome="http_error") == 1
    assert metric("kvclient_retries_total", method="GET", reason="status_503") == 1


def test_transport_failures_have_their_own_outcome(
    refused_url: str, make_client: MakeClient, metric: Metric
) -> None:
    """A call that never got a response is counted as transport_error."""
    client = make_client(base_url=refused_url, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(TransportError):
        client.get("k")
    assert metric("kvclient_requests_total", method="GET", outcome="transport_error") == 1


def test_budget_gauge_follows_the_tokens(
    make_client: MakeClient, server: FaultServer, metric: Metric
) -> None:
    """The gauge starts at the full 10 tokens and drops by one per retry."""
    client = make_client(retry=RetryPolicy(base_delay=0.0))
    assert metric("kvclient_retry_budget_tokens") == 10.0
    server.problem(503, "service_unavailable", times=2)
    client.create("k", 1)
    assert metric("kvclient_retry_budget_tokens") == pytest.approx(8.0, abs=0.1)


def test_clients_on_one_registry_share_their_collectors(
    make_client: MakeClient, metric: Metric
) -> None:
    """A second client on the same registry neither raises nor splits the counts."""
    first, second = make_client(), make_client()
    first.create("a", 1)
    second.create("b", 1)
    assert metric("kvclient_requests_total", method="POST", outcome="success") == 2


def test_clients_on_the_default_registry_do_not_collide(server: FaultServer) -> None:
    """Clients that use prometheus_client's global REGISTRY can be created repeatedly."""
    labels = {"client": "default-registry", "method": "POST", "outcome": "success"}
    before = REGISTRY.get_sample_value("kvclient_requests_total", labels)
    for key in ("x", "y"):
        with KVClient(server.url, name="default-registry") as client:
            client.create(key, 1)
    after = REGISTRY.get_sample_value("kvclient_requests_total", labels)
    assert after == (before or 0.0) + 2


def test_two_clients_in_one_process_are_told_apart(
    make_client: MakeClient, server: FaultServer, registry: CollectorRegistry
) -> None:
    """Each client's calls and retry budget are series of their own, by its `client` label."""
    first, second = make_client(name="orders"), make_client(name="carts")
    server.problem(503, "service_unavailable")
    first.create("a", 1)
    second.create("b", 1)
    second.get("b")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    calls = "kvclient_requests_total"
    assert sample(calls, client="orders", method="POST", outcome="success") == 1
    assert sample(calls, client="carts", method="POST", outcome="success") == 1
    assert sample(calls, client="carts", method="GET", outcome="success") == 1
    orders = sample("kvclient_retry_budget_tokens", client="orders")
    carts = sample("kvclient_retry_budget_tokens", client="carts")
    assert orders is not None and carts is not None and orders < carts


def test_duration_histogram_has_the_outcome(
    make_client: MakeClient, server: FaultServer, metric: Metric
) -> None:
    """Failed and successful calls are timed under their own outcome label."""
    client = make_client()
    server.problem(404, "not_found")
    with pytest.raises(NotFound):
        client.get("k")
    client.create("k", 1)
    assert (
        metric("kvclient_request_duration_seconds_count", method="GET", outcome="http_error") == 1
    )
    assert metric("kvclient_request_duration_seconds_count", method="POST", outcome="success") == 1
