"""Writes of one event-loop pass share a transaction: each keeps its own outcome, none is lost or
applied twice, and a shared transaction that fails is rolled back and its writes run alone."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import Server

PROBLEM = "application/problem+json"


def db_jobs(client: httpx.Client, operation: str) -> float:
    pattern = rf'^kvkit_db_duration_seconds_count\{{operation="{operation}"\}} (\S+)$'
    match = re.search(pattern, client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] | None = None


async def send_together(url: str, calls: list[Call]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *(client.request(c.method, c.path, json=c.body, headers=c.headers or {}) for c in calls)
        )


def test_writes_sent_together_each_get_their_own_outcome(api_server: Server, keyspace: str) -> None:
    """Updates, creates, deletes, stale and missing writes in one burst: each answers as if alone,
    and the stored data is exactly what the successful ones wrote."""
    client = api_server.client()
    before = db_jobs(client, "write_batch")
    for attempt in range(5):  # a burst normally shares a transaction at once; retries absorb timing
        space = f"{keyspace}{attempt}."
        for n in range(8):
            assert (
                client.post("/v1/items", json={"key": f"{space}u{n}", "value": n}).status_code
                == 201
            )
        for n in range(3):
            assert (
                client.post("/v1/items", json={"key": f"{space}d{n}", "value": n}).status_code
                == 201
            )
        stale = client.put(f"/v1/items/{space}u7", json={"value": "v2"}).json()["version"] - 1
        calls = (
            [Call("PUT", f"/v1/items/{space}u{n}", {"value": {"new": n}}) for n in range(7)]
            + [Call("PUT", f"/v1/items/{space}u7", {"value": "lost"}, {"If-Match": f'"{stale}"'})]
            + [Call("POST", "/v1/items", {"key": f"{space}c{n}", "value": [n]}) for n in range(6)]
            + [Call("DELETE", f"/v1/items/{space}d{n}") for n in range(3)]
            + [Call("PUT", f"/v1/items/{space}absent", {"value": 1})]
        )
        responses = asyncio.run(send_together(api_server.url, calls))
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 7 + [412] + [201] * 6 + [204] * 3 + [404], statuses
        for n in range(7):
            assert responses[n].json()["version"] == 2
        assert responses[7].headers["content-type"] == PROBLEM
        for n in range(7):
            item = client.get(f"/v1/items/{space}u{n}").json()
            assert (item["value"], item["version"]) == ({"new": n}, 2)
        assert client.get(f"/v1/items/{space}u7").json()["value"] == "v2"
        for n in range(6):
            assert client.get(f"/v1/items/{space}c{n}").json()["value"] == [n]
        for n in range(3):
            assert client.get(f"/v1/items/{space}d{n}").status_code == 404
        if db_jobs(client, "write_batch") > before:
            break
    assert db_jobs(client, "write_batch") > before, "no writes ever shared a transaction"


def test_a_failed_shared_transaction_loses_nothing_and_applies_nothing_twice(
    api_server: Server, keyspace: str
) -> None:
    """A create of a taken key fails the shared transaction it is in. Its neighbours are rolled
    back with it and run again alone: each is applied exactly once (one version bump)."""
    client = api_server.client()
    before_batches = db_jobs(client, "write_batch")
    before_alone = db_jobs(client, "update_item")
    for attempt in range(5):
        space = f"{keyspace}{attempt}."
        for n in range(6):
            assert (
                client.post("/v1/items", json={"key": f"{space}u{n}", "value": 0}).status_code
                == 201
            )
        assert (
            client.post("/v1/items", json={"key": f"{space}taken", "value": 0}).status_code == 201
        )
        calls = [Call("PUT", f"/v1/items/{space}u{n}", {"value": 1}) for n in range(6)]
        calls.insert(3, Call("POST", "/v1/items", {"key": f"{space}taken", "value": "again"}))
        calls.append(Call("POST", "/v1/items", {"key": f"{space}fresh", "value": 1}))
        responses = asyncio.run(send_together(api_server.url, calls))
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 200, 200, 409, 200, 200, 200, 201], statuses
        assert responses[3].json()["code"] == "key_exists"
        for n in range(6):
            item = client.get(f"/v1/items/{space}u{n}").json()
            assert (item["value"], item["version"]) == (1, 2)
        assert client.get(f"/v1/items/{space}taken").json()["value"] == 0
        assert client.get(f"/v1/items/{space}fresh").json()["value"] == 1
        batched = db_jobs(client, "write_batch") > before_batches
        if batched and db_jobs(client, "update_item") > before_alone:
            break
    # Some burst was sent as a shared transaction, and updates then ran on their own: the fallback.
    assert db_jobs(client, "write_batch") > before_batches
    assert db_jobs(client, "update_item") > before_alone


def test_idempotent_writes_sent_together_run_once_each(api_server: Server, keyspace: str) -> None:
    """Repeats of one Idempotency-Key in a burst create one item; the others replay it or are
    told it is in progress. Distinct keys in the same burst each run once."""
    client = api_server.client()
    same = [
        Call("POST", "/v1/items", {"key": f"{keyspace}one", "value": 1}, {"Idempotency-Key": "k1"})
        for _ in range(6)
    ]
    distinct = [
        Call("PUT", f"/v1/items/{keyspace}p{n}", {"value": n}, {"Idempotency-Key": f"p{n}"})
        for n in range(6)
    ]
    for n in range(6):
        assert (
            client.post("/v1/items", json={"key": f"{keyspace}p{n}", "value": -1}).status_code
            == 201
        )
    responses = asyncio.run(send_together(api_server.url, same + distinct))
    first = [
        r for r in responses[:6] if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(first) == 1
    for response in responses[:6]:
        if response.status_code == 201:
            assert response.content == first[0].content
        else:
            assert response.status_code == 409
            assert response.json()["code"] == "idempotency_in_progress"
    assert client.get(f"/v1/items/{keyspace}one").json()["version"] == 1
    for n, response in enumerate(responses[6:]):
        assert response.status_code == 200
        assert response.json()["version"] == 2
        assert client.get(f"/v1/items/{keyspace}p{n}").json()["value"] == n
    # Sent again, each distinct key replays its first response and writes nothing.
    again = asyncio.run(send_together(api_server.url, distinct))
    for n, response in enumerate(again):
        assert response.headers.get("Idempotent-Replayed") == "true"
        assert response.content == responses[6 + n].content
        assert client.get(f"/v1/items/{keyspace}p{n}").json()["version"] == 2


def writes_by_path(client: httpx.Client, path: str) -> float:
    pattern = rf'^kvkit_db_writes_total\{{path="{path}"\}} (\S+)$'
    match = re.search(pattern, client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def together_path(backend: str) -> str:
    """How writes of one kind sent together reach the database on `backend`."""
    return "one_statement" if backend == "postgres" else "shared"


def test_updates_sent_together_each_get_their_own_outcome(
    api_server: Server, backend: str, keyspace: str
) -> None:
    """A burst of PUTs only (on PostgreSQL one statement): each applies once or answers the
    404 or 412 it would get alone, and a stale one changes nothing."""
    client = api_server.client()
    before = writes_by_path(client, together_path(backend))
    for attempt in range(5):
        space = f"{keyspace}{attempt}."
        for n in range(8):
            response = client.post("/v1/items", json={"key": f"{space}{n}", "value": None})
            assert response.status_code == 201
        calls = [Call("PUT", f"/v1/items/{space}{n}", {"value": {"n": n}}) for n in range(6)]
        calls.append(Call("PUT", f"/v1/items/{space}6", {"value": "x"}, {"If-Match": '"7"'}))
        calls.append(Call("PUT", f"/v1/items/{space}7", {"value": None}, {"If-Match": '"1"'}))
        calls.append(Call("PUT", f"/v1/items/{space}absent", {"value": 1}))
        responses = asyncio.run(send_together(api_server.url, calls))
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 6 + [412, 200, 404], statuses
        assert responses[6].json()["code"] == "version_mismatch"
        for n in range(6):
            assert responses[n].json()["value"] == {"n": n}
            assert responses[n].headers["ETag"] == '"2"'
            assert client.get(f"/v1/items/{space}{n}").json()["value"] == {"n": n}
        stale = client.get(f"/v1/items/{space}6").json()
        assert (stale["value"], stale["version"]) == (None, 1)
        assert client.get(f"/v1/items/{space}7").json() == responses[7].json()
        if writes_by_path(client, together_path(backend)) > before:
            break
    assert writes_by_path(client, together_path(backend)) > before


def test_creates_sent_together_each_get_their_own_outcome(
    api_server: Server, backend: str, keyspace: str
) -> None:
    """A burst of POSTs only, some of taken keys: those answer 409 and keep the old value, the
    others are created once, and no write is refused because of a neighbour.

    PostgreSQL makes them with one statement; elsewhere a taken key fails the shared transaction
    and every write runs again alone, which only the outcomes show."""
    client = api_server.client()
    path = "one_statement" if backend == "postgres" else None
    before = writes_by_path(client, path) if path else 0.0
    for attempt in range(5):
        space = f"{keyspace}{attempt}."
        for n in (1, 4):
            response = client.post("/v1/items", json={"key": f"{space}{n}", "value": "old"})
            assert response.status_code == 201
        # Values equal in Python but not in JSON (1, true, 1.0) must each keep their own type.
        values = [1, "taken", True, 1.0, "taken", None, "1", {"n": [1, True]}]
        calls = [
            Call("POST", "/v1/items", {"key": f"{space}{n}", "value": value})
            for n, value in enumerate(values)
        ]
        responses = asyncio.run(send_together(api_server.url, calls))
        statuses = [r.status_code for r in responses]
        assert statuses == [201, 409, 201, 201, 409, 201, 201, 201], statuses
        for n, response in enumerate(responses):
            stored = client.get(f"/v1/items/{space}{n}").json()
            if n in (1, 4):
                assert response.json()["code"] == "key_exists"
                assert stored["value"] == "old"
            else:
                assert response.headers["Location"] == f"/v1/items/{space}{n}"
                assert stored == response.json()
                assert json.dumps(stored["value"]) == json.dumps(values[n])
        if path is None or writes_by_path(client, path) > before:
            break
    assert path is None or writes_by_path(client, path) > before


def test_idempotent_creates_sent_together_run_once_and_replay(
    api_server: Server, backend: str, keyspace: str
) -> None:
    """A burst of idempotent POSTs with distinct keys, some sent before: new ones run once, old
    ones replay their first response, and a key reused for another body is refused."""
    client = api_server.client()
    # MariaDB's named locks outlive transactions: there every idempotent write runs alone.
    path = None if backend == "mariadb" else together_path(backend)
    before = writes_by_path(client, path) if path else 0.0
    for attempt in range(5):
        space = f"{keyspace}{attempt}."

        post = functools.partial(_idempotent_post, space)
        first = [
            client.post(c.path, json=c.body, headers=c.headers) for c in (post(0, 0), post(1, 1))
        ]
        calls = [post(0, 0), post(1, "other"), *(post(n, n) for n in range(2, 8))]
        responses = asyncio.run(send_together(api_server.url, calls))
        statuses = [r.status_code for r in responses]
        assert statuses == [201, 422] + [201] * 6, statuses
        assert responses[0].headers["Idempotent-Replayed"] == "true"
        assert responses[0].content == first[0].content
        assert responses[1].json()["code"] == "idempotency_key_reused"
        for n in range(2, 8):
            assert "Idempotent-Replayed" not in responses[n].headers
            assert client.get(f"/v1/items/{space}{n}").json()["version"] == 1
        again = asyncio.run(send_together(api_server.url, calls[2:]))
        for n, response in enumerate(again, start=2):
            assert response.headers["Idempotent-Replayed"] == "true"
            assert response.content == responses[n].content
        if path is None or writes_by_path(client, path) > before:
            break
    assert path is None or writes_by_path(client, path) > before


def _idempotent_post(space: str, n: int, value: object) -> Call:
    body = {"key": f"{space}{n}", "value": value}
    return Call("POST", "/v1/items", body, {"Idempotency-Key": f"{space}k{n}"})
