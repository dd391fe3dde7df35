"""Prometheus metrics of the client; names are fixed because dashboards query them.

Every series carries a `client` label (the name given at construction, by default the service's
host:port), so two clients in one process, and their retry budgets, are told apart.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """The collectors of one registry, shared by every client that reports to it."""

    requests: Counter
    retries: Counter
    backoff: Histogram
    duration: Histogram
    budget_tokens: Gauge
    giveups: Counter


_lock = threading.Lock()
# A registry accepts each metric name once, so a second client must reuse the first one's
# collectors instead of registering its own ("Duplicated timeseries in CollectorRegistry").
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ClientMetrics] = (
    weakref.WeakKeyDictionary()
)


def metrics_for(registry: CollectorRegistry) -> ClientMetrics:
    """Return the collectors registered on `registry`, creating them on first use."""
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _create(registry)
            _by_registry[registry] = metrics
        return metrics


def _create(registry: CollectorRegistry) -> ClientMetrics:
    return ClientMetrics(
        requests=Counter(
            "kvclient_requests",
            "Logical calls by HTTP method and outcome (success, http_error, transport_error,"
            " not_sent).",
            ["client", "method", "outcome"],
            registry=registry,
        ),
        retries=Counter(
            "kvclient_retries",
            "Retries by HTTP method and the reason of the failed attempt.",
            ["client", "method", "reason"],
            registry=registry,
        ),
        backoff=Histogram(
            "kvclient_backoff_seconds",
            "Seconds slept before a retry or waited for the service's rate limit to reset.",
            ["client"],
            buckets=_DELAY_BUCKETS,
            registry=registry,
        ),
        duration=Histogram(
            "kvclient_request_duration_seconds",
            "Seconds per logical call, retries and sleeps included.",
            ["client", "method", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        ),
        budget_tokens=Gauge(
            "kvclient_retry_budget_tokens",
            "Tokens left in the client's retry budget.",
            ["client"],
            registry=registry,
        ),
        giveups=Counter(
            "kvclient_giveups",
            "Calls that stopped retrying a retryable failure, by why they stopped.",
            ["client", "method", "reason"],
            registry=registry,
        ),
    )
