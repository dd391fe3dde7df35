"""kvclient against the real service: CRUD, paging, typed errors, If-Match, retries on 429."""

from __future__ import annotations

import uuid

import pytest
from kvclient import (
    KeyExists,
    KVClient,
    NotFound,
    RateLimited,
    RetryEvent,
    RetryPolicy,
    Unauthorized,
    ValidationError,
    VersionMismatch,
)
from prometheus_client import CollectorRegistry

from tests.conftest import Server, ServerFactory


@pytest.fixture(scope="module")
def service(server_factory: ServerFactory) -> tuple[Server, str]:
    key = uuid.uuid4().hex
    return server_factory("postgres", KV_API_KEYS=key), key


@pytest.fixture
def kv(service: tuple[Server, str]) -> KVClient:
    server, key = service
    with KVClient(server.url, api_key=key, registry=CollectorRegistry()) as client:
        yield client  # type: ignore[misc]


def test_crud_round_trip(kv: KVClient, keyspace: str) -> None:
    """create, get, update and delete map to the service's items and versions."""
    key = keyspace + "a"
    created = kv.create(key, {"n": 1})
    assert (created.key, created.value, created.version) == (key, {"n": 1}, 1)
    assert kv.get(key).value == {"n": 1}
    updated = kv.update(key, None)
    assert updated.version == 2 and updated.value is None
    kv.delete(key)
    with pytest.raises(NotFound) as caught:
        kv.get(key)
    assert caught.value.status == 404 and caught.value.code == "not_found"
    assert caught.value.request_id


def test_iter_items_walks_many_pages_in_order(kv: KVClient, keyspace: str) -> None:
    """iter_items follows cursors across pages and yields every item once, in key order."""
    keys = [f"{keyspace}{n:03d}" for n in range(57)]
    for key in keys:
        kv.create(key, key)
    assert [item.key for item in kv.iter_items(prefix=keyspace, page_size=10)] == keys
    page = kv.list(limit=50, prefix=keyspace)
    assert len(page.items) == 50 and page.next_cursor is not None


def test_typed_errors(kv: KVClient, keyspace: str) -> None:
    """409, 412 and 422 arrive as KeyExists, VersionMismatch and ValidationError."""
    key = keyspace + "e"
    kv.create(key, 1)
    with pytest.raises(KeyExists):
        kv.create(key, 2)
    with pytest.raises(VersionMismatch) as stale:
        kv.update(key, 3, if_version=7)
    assert stale.value.status == 412
    with pytest.raises(ValidationError):
        kv.create("not a valid key", 1)
    assert kv.get(key).value == 1


def test_if_version_applies_when_current(kv: KVClient, keyspace: str) -> None:
    """update and delete with the current version succeed."""
    key = keyspace + "v"
    kv.create(key, 1)
    assert kv.update(key, 2, if_version=1).version == 2
    kv.delete(key, if_version=2)
    with pytest.raises(NotFound):
        kv.get(key)


def test_wrong_api_key_is_unauthorized(service: tuple[Server, str]) -> None:
    """A wrong key raises Unauthorized and is not retried."""
    server, _ = service
    with (
        KVClient(server.url, api_key="x" * 32, registry=CollectorRegistry()) as client,
        pytest.raises(Unauthorized),
    ):
        client.get("anything")


def test_create_retried_after_429_is_written_once(
    server_factory: ServerFactory, keyspace: str
) -> None:
    """A create refused with 429 is retried after Retry-After and lands exactly once."""
    key = uuid.uuid4().hex
    server = server_factory("sqlite", KV_API_KEYS=key, KV_RATE_LIMIT="2/2second")
    retries: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=3.0)
    # Pacing off: the third create must meet the server's 429, not wait for the window first.
    with KVClient(
        server.url,
        api_key=key,
        retry=policy,
        registry=CollectorRegistry(),
        pacing=False,
        on_retry=retries.append,
    ) as client:
        client.create(keyspace + "1", 1)
        client.create(keyspace + "2", 2)
        item = client.create(keyspace + "3", 3)  # the third in 2 s is refused, then retried
    assert item.version == 1
    assert retries and retries[0].reason == "status_429" and retries[0].delay >= 1
    with KVClient(
        server.url,
        api_key=key,
        registry=CollectorRegistry(),
        retry=RetryPolicy(max_attempts=1),
        pacing=False,  # send it and meet the 429, rather than wait out the window
    ) as client:
        client.get(keyspace + "3")
        with pytest.raises(RateLimited) as limited:
            client.get(keyspace + "3")
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1
