"""The `kvclient` logger writes one structured line per retry."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from kvclient import RetryPolicy, ServiceUnavailable

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient


def test_each_retry_logs_one_line_with_its_context(
    make_client: MakeClient, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every retry logs method, route template, attempt, reason, delay and request id."""
    client = make_client(retry=RetryPolicy(jitter=False))
    server.problem(503, "service_unavailable", times=2)
    with caplog.at_level(logging.INFO, logger="kvclient"):
        client.create("secret-key-name", 1)
    records = [r for r in caplog.records if r.name == "kvclient"]
    assert len(records) == 2
    request_id = server.requests[0].headers.get("X-Request-ID")
    for attempt, (record, delay) in enumerate(zip(records, [0.1, 0.2], strict=True), start=1):
        assert record.levelno == logging.INFO
        assert record.__dict__["method"] == "POST"
        assert record.__dict__["route"] == "/v1/items"
        assert record.__dict__["attempt"] == attempt
        assert record.__dict__["reason"] == "status_503"
        assert record.__dict__["delay"] == delay
        assert record.__dict__["request_id"] == request_id
        assert request_id in record.getMessage()


def test_retry_lines_name_the_route_not_the_key(
    make_client: MakeClient, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines carry the route template, never the raw key, which may be sensitive."""
    client = make_client()
    client.create("secret-key-name", 1)
    server.problem(503, "service_unavailable")
    with caplog.at_level(logging.INFO, logger="kvclient"):
        client.get("secret-key-name")
    (record,) = [r for r in caplog.records if r.name == "kvclient"]
    assert record.__dict__["route"] == "/v1/items/{key}"
    assert "secret-key-name" not in record.getMessage()
    assert "GET /v1/items/{key}" in record.getMessage()


def test_giving_up_logs_one_warning(
    make_client: MakeClient, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """When retries stop, one WARNING says why, with the route and request id."""
    client = make_client(retry=RetryPolicy(max_attempts=2))
    server.problem(503, "service_unavailable", times=None)
    with caplog.at_level(logging.INFO, logger="kvclient"), pytest.raises(ServiceUnavailable):
        client.get("k")
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.__dict__["reason"] == "max_attempts"
    assert record.__dict__["request_id"] == server.requests[0].headers.get("X-Request-ID")
    assert "giving up on GET /v1/items/{key} after 2 attempt(s)" in record.getMessage()


def test_each_attempt_logs_a_debug_line(
    make_client: MakeClient, server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG every attempt logs its route, answer and attempt number."""
    client = make_client()
    server.problem(503, "service_unavailable")
    with caplog.at_level(logging.DEBUG, logger="kvclient"):
        client.create("k", 1)
    lines = [r for r in caplog.records if r.name == "kvclient" and r.levelno == logging.DEBUG]
    assert [(r.__dict__["attempt"], r.__dict__["outcome"]) for r in lines] == [
        (1, "503"),
        (2, "201"),
    ]
    assert lines[0].getMessage().startswith("POST /v1/items -> 503 in ")
