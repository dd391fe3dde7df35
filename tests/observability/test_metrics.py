"""Prometheus metrics: exact across gunicorn workers, labelled by route template only."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, ServerFactory

# Probes are counted too, but the harness polls /healthz an unknown number of times at start.
NOT_SENT_BY_TEST = {"/metrics", "/healthz"}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics scrape, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_by_route(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, labels), value in samples.items():
        if name == "kvkit_http_requests_total":
            counts[dict(labels)["route"]] += int(value)
    return counts


@pytest.fixture(scope="module")
def workers_server(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """gunicorn with four workers sharing a prometheus multiprocess directory."""
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    return server_factory("sqlite", workers=4, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))


def test_request_count_is_exact_across_workers(workers_server: Server, keyspace: str) -> None:
    """K requests spread over four workers sum to exactly K in every scrape."""
    sent = 200
    # A fresh connection per request from eight senders at once: one worker alone, accepting
    # sequential connections as fast as they come, could otherwise take every one of them.
    client = workers_server.client(headers={"Connection": "close"})

    def post_and_get(n: int) -> None:
        with workers_server.client(headers={"Connection": "close"}) as own:
            response = own.post("/v1/items", json={"key": f"{keyspace}{n}", "value": n})
            assert response.status_code == 201
            assert own.get(f"/v1/items/{keyspace}{n}").status_code == 200

    with ThreadPoolExecutor(max_workers=8) as senders:
        list(senders.map(post_and_get, range(sent // 2)))
    for _ in range(3):
        counts = requests_by_route(scrape(client))
        assert sum(n for route, n in counts.items() if route not in NOT_SENT_BY_TEST) == sent
    metrics_dir = Path(workers_server.env["PROMETHEUS_MULTIPROC_DIR"])
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 2  # several workers really served


def test_metrics_is_a_route_with_the_prometheus_content_type(workers_server: Server) -> None:
    """/metrics answers 200 itself (no redirect) in the Prometheus text format."""
    response = httpx.get(workers_server.url + "/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# TYPE kvkit_http_requests_total counter" in response.text
    assert "# TYPE kvkit_http_request_duration_seconds histogram" in response.text


def test_keys_and_raw_paths_never_become_labels(workers_server: Server) -> None:
    """Item keys and unknown paths show up only as route templates or route="unmatched"."""
    client = workers_server.client()
    keys = [f"secret-{uuid.uuid4().hex}" for _ in range(100)]
    for key in keys:
        assert client.post("/v1/items", json={"key": key, "value": 1}).status_code == 201
    stray = f"/v1/no/such/thing/{uuid.uuid4().hex}"
    assert client.get(stray).status_code == 404
    text = client.get("/metrics").text
    assert not [key for key in keys if key in text]
    assert stray.rsplit("/", 1)[1] not in text
    counts = requests_by_route(scrape(client))
    assert counts["unmatched"] >= 1
    assert counts["/v1/items"] >= 100
    routes = {"/v1/items", "/v1/items/{key}", "/metrics", "/healthz", "/readyz", "unmatched"}
    assert set(counts) <= routes  # the templates, each created at 0 at start


def test_short_circuited_responses_are_counted_under_their_route(
    server_factory: ServerFactory,
) -> None:
    """429s count as 4xx on their route template; the limiter's decisions are counted."""
    server = server_factory("sqlite", KV_RATE_LIMIT="3/minute")
    client = server.client()
    statuses = [client.get("/v1/items/some-key").status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    samples = scrape(client)
    decisions = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "kvkit_ratelimit_decisions_total"
    }
    assert decisions.get("allowed") == 3
    assert decisions.get("limited") == 2
    assert decisions.get("degraded", 0) == 0
    route = (("method", "GET"), ("route", "/v1/items/{key}"), ("status_class", "4xx"))
    assert samples[("kvkit_http_requests_total", route)] == 5


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def redis_server(server_factory: ServerFactory, redis_url: str) -> Server:
    """uvicorn on PostgreSQL with the shared Redis limiter."""
    return server_factory("postgres", REDIS_URL=redis_url)


def test_idempotency_events_are_counted(redis_server: Server, keyspace: str) -> None:
    """A replayed write and a reused key each bump their idempotency outcome."""
    client = redis_server.client()
    before = scrape(client)
    headers = {"Idempotency-Key": f"{keyspace}idem"}
    body = {"key": f"{keyspace}a", "value": 1}
    assert client.post("/v1/items", json=body, headers=headers).status_code == 201
    replay = client.post("/v1/items", json=body, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    other = {"key": f"{keyspace}b", "value": 2}
    assert client.post("/v1/items", json=other, headers=headers).status_code == 422
    after = scrape(client)
    name = "kvkit_idempotency_events_total"
    for outcome in ("replayed", "key_reused"):
        assert sample(after, name, outcome=outcome) - sample(before, name, outcome=outcome) == 1


def test_database_and_redis_calls_are_timed(redis_server: Server) -> None:
    """Each read adds one get_item database observation and one EVALSHA Redis observation."""
    client = redis_server.client()
    before = scrape(client)
    for _ in range(3):
        assert client.get("/v1/items/absent").status_code == 404
    after = scrape(client)
    db = "kvkit_db_duration_seconds_count"
    redis = "kvkit_redis_duration_seconds_count"
    assert sample(after, db, operation="get_item") - sample(before, db, operation="get_item") == 3
    assert (
        sample(after, redis, operation="evalsha") - sample(before, redis, operation="evalsha") == 3
    )
    assert sample(after, "kvkit_redis_errors_total", operation="evalsha") == 0


def test_a_scrape_is_answered_from_one_collection_per_interval(
    server_factory: ServerFactory,
) -> None:
    """Within KV_METRICS_MIN_INTERVAL every scrape gets the same collection; after it, a new one
    that counts what happened meanwhile."""
    server = server_factory("sqlite", KV_METRICS_MIN_INTERVAL="5")
    client = server.client()
    first = client.get("/metrics").text
    for _ in range(5):
        assert client.get("/v1/items").status_code == 200
    assert client.get("/metrics").text == first
    time.sleep(5.1)
    later = client.get("/metrics").text
    assert later != first
    assert 'route="/v1/items"' in later
