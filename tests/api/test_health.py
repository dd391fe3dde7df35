"""Liveness and readiness."""

from __future__ import annotations

import math
import re
import time

import httpx


def test_healthz_answers_without_touching_the_database(api: httpx.Client) -> None:
    """/healthz is 200 while the process lives."""
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_the_database_answers(api: httpx.Client) -> None:
    """/readyz reports the database up."""
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["database"] == "up"


def test_openapi_document_is_served(api: httpx.Client) -> None:
    """/openapi.json lists the item routes with their problem responses."""
    spec = api.get("/openapi.json").json()
    assert {"/v1/items", "/v1/items/{key}"} <= set(spec["paths"])
    assert "409" in spec["paths"]["/v1/items"]["post"]["responses"]
    assert "412" in spec["paths"]["/v1/items/{key}"]["put"]["responses"]


def _pings(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r'^kvkit_db_duration_seconds_count\{operation="ping"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_readyz_asks_the_database_at_most_once_a_second(api: httpx.Client) -> None:
    """However often /readyz is called, one worker sends the database one query per second."""
    before = _pings(api)
    started = time.monotonic()
    assert all(api.get("/readyz").status_code == 200 for _ in range(40))
    elapsed = time.monotonic() - started
    assert _pings(api) - before <= math.floor(elapsed) + 1
