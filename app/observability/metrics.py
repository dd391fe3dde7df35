"""Prometheus metrics, named and typed as monitoring/metrics.txt fixes them.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR and a scrape of any
worker sums them all; that mode allows only plain counters, gauges and histograms.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# A key-value API answers in milliseconds; the tail up to seconds shows timeouts.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "kvkit_http_requests_total",
    "HTTP requests answered, by route template and status class.",
    ["method", "route", "status_class"],
)
HTTP_DURATION = Histogram(
    "kvkit_http_request_duration_seconds",
    "Time from receiving a request to the end of its response.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "kvkit_http_requests_in_flight",
    "Requests being served right now.",
    multiprocess_mode="livesum",
)
RATELIMIT_DECISIONS = Counter(
    "kvkit_ratelimit_decisions_total",
    "Rate-limit decisions: allowed, limited, or degraded (decided by the local fallback).",
    ["outcome"],
)
IDEMPOTENCY_EVENTS = Counter(
    "kvkit_idempotency_events_total",
    "Idempotency-Key events: replayed, key_reused, in_progress.",
    ["outcome"],
)
DB_ERRORS = Counter(
    "kvkit_db_errors_total",
    "Database failures by kind: unavailable, timeout, other.",
    ["kind"],
)
DB_WRITES = Counter(
    "kvkit_db_writes_total",
    "Writes by how they reached the database: one_statement (sent together, one statement per"
    " batch), shared (sent together, one transaction), alone (a transaction of its own).",
    ["path"],
)
DB_THREADS = Gauge(
    "kvkit_db_threads",
    "Database threads (KV_DB_THREADS per worker), so busy threads can be read as a fraction.",
    multiprocess_mode="livesum",
)
DB_THREADS_BUSY = Gauge(
    "kvkit_db_threads_busy",
    "Database threads running a job now; all of them busy means jobs queue.",
    multiprocess_mode="livesum",
)
DB_CONNECTIONS = Gauge(
    "kvkit_db_connections_open",
    "Database connections the database threads hold open (at most one per thread).",
    multiprocess_mode="livesum",
)
DB_DURATION = Histogram(
    "kvkit_db_duration_seconds",
    "Time of one database job, including the wait for a database thread.",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)
PURGE_LAST_SUCCESS = Gauge(
    "kvkit_idempotency_purge_last_success_timestamp_seconds",
    "When purge-idempotency last succeeded (Unix time), as recorded in the database; the"
    " schema's creation counts as the first.",
    multiprocess_mode="livemax",
)
REDIS_ERRORS = Counter(
    "kvkit_redis_errors_total",
    "Failed Redis commands.",
    ["operation"],
)
REDIS_DURATION = Histogram(
    "kvkit_redis_duration_seconds",
    "Time of one Redis round trip (rate-limit checks sent together in a pipeline count once).",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)


# Every value a label can take where it is fixed by the code: each child is created at 0 at
# start, so panels show 0 rather than "No data" and rate() sees the first increment.
KNOWN_LABELS: dict[Counter, tuple[tuple[str, ...], ...]] = {
    RATELIMIT_DECISIONS: (("allowed",), ("limited",), ("degraded",)),
    IDEMPOTENCY_EVENTS: (("replayed",), ("key_reused",), ("in_progress",)),
    DB_ERRORS: (("unavailable",), ("timeout",), ("conflict",), ("other",), ("overloaded",)),
    DB_WRITES: (("one_statement",), ("shared",), ("alone",)),
    REDIS_ERRORS: (("ping",), ("evalsha",)),
}
STATUS_CLASSES = ("2xx", "4xx", "5xx")


def initialise_counters(routes: Iterable[tuple[str, str]]) -> None:
    """Create every known child at 0, and the request counters of each (method, route)."""
    for metric, values in KNOWN_LABELS.items():
        for value in values:
            labelled(metric, *value)
    for method, route in routes:
        for status_class in STATUS_CLASSES:
            labelled(HTTP_REQUESTS, method, route, status_class)


@functools.cache
def labelled(metric: M, *values: str) -> M:
    """The child of `metric` for these label values, found once per process.

    `labels()` validates, builds a tuple and takes a lock on every call; label values here are
    route templates, methods and fixed words, so the cache stays small.
    """
    return metric.labels(*values)


@contextmanager
def observe_redis(operation: str) -> Iterator[None]:
    """Time one Redis command and count it as an error if it raises."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        labelled(REDIS_ERRORS, operation).inc()
        raise
    finally:
        labelled(REDIS_DURATION, operation).observe(time.perf_counter() - started)
