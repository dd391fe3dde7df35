"""KV_METRICS_PORT: /metrics on a port of its own, for every worker, and gone from the API port."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory, free_port


def listed(text: str) -> float:
    """kvkit_http_requests_total of GET /v1/items in an exposition, over every status class."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kvkit_http_requests_total"
        and sample.labels["route"] == "/v1/items"
        and sample.labels["method"] == "GET"
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["uvicorn", "gunicorn-2-workers"])
def test_metrics_are_served_on_their_own_port_only(
    server_factory: ServerFactory, workers: int
) -> None:
    """With KV_METRICS_PORT set, the API port has no /metrics, and the metrics port counts the
    requests of every worker in one scrape."""
    port = free_port()
    server = server_factory("sqlite", workers=workers, KV_METRICS_PORT=str(port))
    api = server.client(limits=httpx.Limits(max_keepalive_connections=0))  # spread over workers
    for _ in range(40):
        assert api.get("/v1/items").status_code == 200
    on_api_port = api.get("/metrics")
    assert on_api_port.status_code == 404
    assert on_api_port.headers["content-type"] == "application/problem+json"
    scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert listed(scrape.text) == 40
    assert httpx.get(f"http://127.0.0.1:{port}/v1/items", timeout=10).status_code == 404


def test_the_metrics_port_closes_with_the_server(server_factory: ServerFactory) -> None:
    """Stopping gunicorn stops the master's metrics listener too: nothing is left on the port."""
    port = free_port()
    server = server_factory("sqlite", workers=2, KV_METRICS_PORT=str(port))
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    assert server.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
