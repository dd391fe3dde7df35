"""Writes of one event-loop pass share a transaction: each keeps its own outcome, none is lost or
applied twice, and a shared transaction that fails runs each of its writes on its own.

The services run in this process against each backend, and the writes are submitted in one
loop pass by `asyncio.gather`, so every batch forms deterministically.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx
from django.db import DatabaseError
from prometheus_client import REGISTRY

from app.idempotency.keys import IdempotencyRequest
from app.services import items as service
from app.store.records import Outcome, Status
from tests.conftest import Server


def together(*calls: Coroutine[Any, Any, Outcome]) -> list[Outcome | BaseException]:
    """Run the calls in one event-loop pass; each one's outcome or error."""

    async def gather() -> list[Outcome | BaseException]:
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(asyncio.wait_for(gather(), timeout=60))


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def writes_by_path(path: str) -> float:
    return counted("kvkit_db_writes_total", path=path)


def status_of(result: Outcome | BaseException) -> Status | str:
    return result.status if isinstance(result, Outcome) else type(result).__name__


def test_writes_of_one_pass_share_one_transaction(services: str, keyspace: str) -> None:
    """Creates, updates and deletes sent together: one database job, each its own outcome."""
    k = keyspace
    together(*(service.create_item(f"{k}{n}", "0", None) for n in range(4)))
    jobs = counted("kvkit_db_duration_seconds_count", operation="mixed")
    before = writes_by_path("shared")
    results = together(
        service.update_item(f"{k}0", '"a"', None, None),
        service.update_item(f"{k}1", '"b"', 7, None),
        service.delete_item(f"{k}2", 1, None),
        service.create_item(f"{k}3", "1", None),
        service.create_item(f"{k}new", "1", None),
    )
    assert [status_of(r) for r in results] == [
        Status.UPDATED,
        Status.VERSION_MISMATCH,
        Status.DELETED,
        Status.KEY_EXISTS,
        Status.CREATED,
    ]
    assert counted("kvkit_db_duration_seconds_count", operation="mixed") - jobs == 1
    assert writes_by_path("shared") - before == 5


def test_a_failed_shared_transaction_runs_each_write_alone(
    services: str, failing_key: str, keyspace: str
) -> None:
    """One write the database refuses fails alone; its neighbours are applied exactly once."""
    together(*(service.create_item(f"{keyspace}{n}", "0", None) for n in range(4)))
    before = writes_by_path("alone")
    results = together(
        *(service.update_item(f"{keyspace}{n}", "1", None, None) for n in range(4)),
        service.create_item(keyspace + failing_key, "1", None),
        service.create_item(keyspace + "fresh", "1", None),
    )
    assert [status_of(r) for r in results[:4]] == [Status.UPDATED] * 4
    assert [r.item.version for r in results[:4]] == [2] * 4  # type: ignore[union-attr]
    assert isinstance(results[4], DatabaseError)
    assert status_of(results[5]) is Status.CREATED
    assert writes_by_path("alone") - before == 5  # a refused write is counted nowhere
    reads = asyncio.run(_read_all([f"{keyspace}{n}" for n in range(4)] + [keyspace + "fresh"]))
    assert [(r.value, r.version) for r in reads] == [("1", 2)] * 4 + [("1", 1)]  # type: ignore[union-attr]


def test_one_idempotency_key_sent_many_times_together_writes_once(
    services: str, keyspace: str
) -> None:
    """Six requests with one key in one pass: one create, five replays of its outcome."""
    key = keyspace + "one"
    request = IdempotencyRequest("client", uuid.uuid4().hex, "fingerprint")
    results = together(*(service.create_item(key, "1", request) for _ in range(6)))
    outcomes = [r for r in results if isinstance(r, Outcome)]
    assert len(outcomes) == 6
    assert [o.replay_of is None for o in outcomes].count(True) == 1
    assert {(o.status, o.item) for o in outcomes} == {(Status.CREATED, outcomes[0].item)}


async def _read_all(keys: list[str]) -> list[Any]:
    return await asyncio.gather(*(service.read_item(key) for key in keys))


async def _send_together(url: str, calls: list[tuple[str, str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *(client.request(method, path, json=body) for method, path, body in calls)
        )


def test_concurrent_writes_over_http_each_get_their_own_answer(
    api_server: Server, keyspace: str
) -> None:
    """Through the real server, however the writes batch: each answer is the one it would get
    alone, and the stored data is exactly what the successful ones wrote."""
    client = api_server.client()
    for n in range(8):
        assert (
            client.post("/v1/items", json={"key": f"{keyspace}u{n}", "value": n}).status_code == 201
        )
    calls = [("PUT", f"/v1/items/{keyspace}u{n}", {"value": {"new": n}}) for n in range(8)]
    calls += [("POST", "/v1/items", {"key": f"{keyspace}u{n}", "value": "again"}) for n in range(2)]
    calls += [("DELETE", f"/v1/items/{keyspace}absent", None)]
    responses = asyncio.run(_send_together(api_server.url, calls))
    assert [r.status_code for r in responses] == [200] * 8 + [409, 409, 404]
    for n in range(8):
        item = client.get(f"/v1/items/{keyspace}u{n}").json()
        assert (item["value"], item["version"]) == ({"new": n}, 2)
