"""X-Forwarded-For from a trusted proxy, written in every way one address can be written."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from tests.conftest import Server, ServerFactory


@pytest.fixture(scope="module")
def behind_proxy(server_factory: ServerFactory) -> Server:
    """The service on PostgreSQL behind a trusted proxy on loopback, at 60 requests a minute."""
    return server_factory("postgres", KV_TRUSTED_PROXIES="127.0.0.1/32", KV_RATE_LIMIT="60/minute")


def test_ipv6_zone_ids_open_no_new_bucket(behind_proxy: Server) -> None:
    """70 requests for one host, each with another zone ID, share a bucket: 60 pass, 10 are 429."""
    host = f"fe80::{uuid.uuid4().int % 0xFFFF:x}"
    client = behind_proxy.client()
    statuses = Counter(
        client.get("/v1/items", headers={"X-Forwarded-For": f"{host}%zone{n}"}).status_code
        for n in range(70)
    )
    assert statuses == {200: 60, 429: 10}


def test_a_long_zone_id_with_an_idempotency_key_is_created(behind_proxy: Server) -> None:
    """An 80-character zone ID never reaches the database as part of the client's identity."""
    host = f"fe80::{uuid.uuid4().int % 0xFFFF:x}%" + "z" * 80
    response = behind_proxy.client().post(
        "/v1/items",
        json={"key": uuid.uuid4().hex, "value": 1},
        headers={"X-Forwarded-For": host, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
