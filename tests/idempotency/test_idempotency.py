"""Idempotency-Key: a retried write happens once, on every backend."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import pytest

from tests.conftest import POSTGRES, Databases, Server, ServerFactory, service_env
from tests.tcp_proxy import TcpProxy


@pytest.fixture(scope="session")
def keyed_server(backend: str, server_factory: ServerFactory) -> tuple[Server, list[str]]:
    keys = [uuid.uuid4().hex for _ in range(2)]
    return server_factory(backend, KV_API_KEYS=",".join(keys)), keys


@pytest.fixture
def client(keyed_server: tuple[Server, list[str]]) -> httpx.Client:
    server, keys = keyed_server
    return server.client(headers={"X-API-Key": keys[0]})


def _post(client: httpx.Client, key: str, value: object, idem: str) -> httpx.Response:
    return client.post(
        "/v1/items", json={"key": key, "value": value}, headers={"Idempotency-Key": idem}
    )


def test_replay_returns_the_original_response_without_a_second_write(
    client: httpx.Client, keyspace: str
) -> None:
    """The same POST twice: same status and body, Idempotent-Replayed on the second, one item."""
    key, idem = keyspace + "a", uuid.uuid4().hex
    first = _post(client, key, {"v": 1}, idem)
    client.put(f"/v1/items/{key}", json={"value": "changed"})  # a later write by someone else
    second = _post(client, key, {"v": 1}, idem)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert client.get(f"/v1/items/{key}").json()["value"] == "changed"  # no second create


def test_replayed_put_does_not_bump_the_version_again(client: httpx.Client, keyspace: str) -> None:
    """A PUT retried with its key is applied once: version 2, not 3."""
    key, idem = keyspace + "p", uuid.uuid4().hex
    client.post("/v1/items", json={"key": key, "value": 0})
    for _ in range(3):
        response = client.put(
            f"/v1/items/{key}", json={"value": 1}, headers={"Idempotency-Key": idem}
        )
        assert response.status_code == 200 and response.json()["version"] == 2
    assert client.get(f"/v1/items/{key}").json()["version"] == 2


def test_replayed_delete_answers_204_again(client: httpx.Client, keyspace: str) -> None:
    """A retried DELETE replays its 204 instead of turning into a 404."""
    key, idem = keyspace + "d", uuid.uuid4().hex
    client.post("/v1/items", json={"key": key, "value": 0})
    first = client.delete(f"/v1/items/{key}", headers={"Idempotency-Key": idem})
    second = client.delete(f"/v1/items/{key}", headers={"Idempotency-Key": idem})
    assert (first.status_code, second.status_code) == (204, 204)
    assert second.headers["idempotent-replayed"] == "true"


def test_a_4xx_outcome_is_replayed_too(client: httpx.Client, keyspace: str) -> None:
    """A create that met 409 replays the same 409 problem, byte for byte."""
    key, idem = keyspace + "x", uuid.uuid4().hex
    client.post("/v1/items", json={"key": key, "value": 0})
    first = _post(client, key, 1, idem)
    second = _post(client, key, 1, idem)
    assert first.status_code == second.status_code == 409
    assert second.content == first.content
    assert second.headers["content-type"] == "application/problem+json"


def test_same_key_for_a_different_request_is_422(client: httpx.Client, keyspace: str) -> None:
    """Reusing a key with another body is 422 idempotency_key_reused and writes nothing."""
    idem = uuid.uuid4().hex
    assert _post(client, keyspace + "f", 1, idem).status_code == 201
    reused = _post(client, keyspace + "f", 2, idem)
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    assert client.get(f"/v1/items/{keyspace}f").json()["value"] == 1


def test_body_key_order_does_not_change_the_fingerprint(
    client: httpx.Client, keyspace: str
) -> None:
    """The fingerprint uses canonical JSON: reordered object members are the same request."""
    idem, key = uuid.uuid4().hex, keyspace + "o"
    first = client.post(
        "/v1/items",
        content=f'{{"key":"{key}","value":{{"a":1,"b":2}}}}',
        headers={"Idempotency-Key": idem, "Content-Type": "application/json"},
    )
    second = client.post(
        "/v1/items",
        content=f'{{"value":{{"b":2,"a":1}},"key":"{key}"}}',
        headers={"Idempotency-Key": idem, "Content-Type": "application/json"},
    )
    assert first.status_code == 201 and second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("idem", ["", "x" * 256, "has space", "tab\there"])
def test_malformed_key_is_400(client: httpx.Client, keyspace: str, idem: str) -> None:
    """An Idempotency-Key that is empty, too long or not visible ASCII is 400 and writes nothing."""
    response = _post(client, keyspace + "m", 1, idem)
    assert response.status_code == 400 and response.json()["code"] == "bad_request"
    assert client.get(f"/v1/items/{keyspace}m").status_code == 404


def test_keys_are_scoped_per_client(keyed_server: tuple[Server, list[str]], keyspace: str) -> None:
    """Two API keys using the same Idempotency-Key do not see each other's records."""
    server, keys = keyed_server
    idem = uuid.uuid4().hex
    one = server.client(headers={"X-API-Key": keys[0]})
    two = server.client(headers={"X-API-Key": keys[1]})
    assert _post(one, keyspace + "1", 1, idem).status_code == 201
    response = _post(two, keyspace + "2", 2, idem)
    assert response.status_code == 201 and "idempotent-replayed" not in response.headers


def test_twenty_concurrent_posts_with_one_key_create_one_item(
    client: httpx.Client, keyspace: str
) -> None:
    """20 concurrent POSTs with one key: one item; each answer the 201 or 409 in progress."""
    key, idem = keyspace + "c", uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: _post(client, key, "v", idem), range(20)))
    originals = [r for r in responses if r.status_code == 201]
    assert originals, [r.status_code for r in responses]
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            assert response.content == originals[0].content
        else:
            assert response.json()["code"] == "idempotency_in_progress"
            assert response.headers["retry-after"] == "1"
    assert sum("idempotent-replayed" not in r.headers for r in originals) == 1
    assert client.get(f"/v1/items/{key}").json()["version"] == 1


def test_a_first_attempt_that_failed_with_5xx_runs_again(
    server_factory: ServerFactory, databases: Databases, keyspace: str, api_keys: list[str]
) -> None:
    """A 503 is never stored: the retry with the same key performs the write."""
    proxy = TcpProxy(POSTGRES)
    try:
        url = databases.url("postgres").replace(":5432/", f":{proxy.port}/")
        server = server_factory(
            "postgres", DATABASE_URL=url, KV_DB_TIMEOUT="1", KV_API_KEYS=api_keys[0]
        )
        client = server.client(headers={"X-API-Key": api_keys[0]})
        key, idem = keyspace + "r", uuid.uuid4().hex
        proxy.set_mode("refuse")
        assert _post(client, key, 1, idem).status_code == 503
        proxy.set_mode("forward")
        response = _post(client, key, 1, idem)
        for _ in range(50):
            if response.status_code != 503:
                break
            response = _post(client, key, 1, idem)
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    finally:
        proxy.close()


def test_purge_deletes_expired_records_and_expired_keys_run_again(
    server_factory: ServerFactory,
    databases: Databases,
    keyspace: str,
    api_keys: list[str],
    tmp_path: object,
) -> None:
    """purge-idempotency removes expired records; an expired key counts as a new request."""
    import subprocess
    import sys

    import psycopg

    server = server_factory("postgres", KV_API_KEYS=api_keys[0])
    client = server.client(headers={"X-API-Key": api_keys[0]})
    idem = uuid.uuid4().hex
    assert _post(client, keyspace + "e", 1, idem).status_code == 201
    dsn = databases.url("postgres").replace("postgres://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE kv_idempotency SET expires_at = now() - interval '1 second' WHERE key = %s",
            [idem],
        )
    result = subprocess.run(
        [sys.executable, "-m", "app", "purge-idempotency"],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=service_env(DATABASE_URL=databases.url("postgres")),
    )
    assert result.stdout.startswith("deleted ") and int(result.stdout.split()[1]) >= 1
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM kv_idempotency WHERE key = %s", [idem]).fetchone()
    assert row == (0,)
    again = _post(client, keyspace + "e", 1, idem)
    assert again.status_code == 409 and again.json()["code"] == "key_exists"
