"""KVClient's operations against a kvkit stand-in on a real socket."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from kvclient import ClientClosed, Item, NotFound, Page, VersionMismatch

if TYPE_CHECKING:
    from conftest import FaultServer, MakeClient


def test_create_returns_the_stored_item(client: Any, server: FaultServer) -> None:
    """create POSTs key and value and returns the item at version 1 with parsed timestamps."""
    item = client.create("greeting", {"text": "hi"})
    assert (item.key, item.value, item.version) == ("greeting", {"text": "hi"}, 1)
    assert isinstance(item.created_at, datetime) and item.created_at.tzinfo is not None
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/items")
    assert request.json() == {"key": "greeting", "value": {"text": "hi"}}


def test_every_write_carries_an_idempotency_key(client: Any, server: FaultServer) -> None:
    """create, update and delete each send their own Idempotency-Key; reads send none."""
    client.create("k", 1)
    client.update("k", 2)
    client.get("k")
    client.delete("k")
    keys = [request.headers.get("Idempotency-Key") for request in server.requests]
    assert keys[2] is None
    assert all(keys[i] for i in (0, 1, 3))
    assert len({keys[0], keys[1], keys[3]}) == 3


def test_caller_idempotency_key_is_sent_as_given(client: Any, server: FaultServer) -> None:
    """An explicit idempotency_key replaces the generated one, so a rerun replays, not repeats."""
    first = client.create("once", 1, idempotency_key="order-17")
    again = client.create("once", 1, idempotency_key="order-17")
    assert first == again
    assert [r.headers.get("Idempotency-Key") for r in server.requests] == ["order-17"] * 2
    assert server.kv.writes == [("POST", "once")]


def test_each_call_sends_a_fresh_request_id(client: Any, server: FaultServer) -> None:
    """Every logical call carries its own X-Request-ID."""
    client.create("a", 1)
    client.get("a")
    ids = [request.headers.get("X-Request-ID") for request in server.requests]
    assert all(ids) and ids[0] != ids[1]


def test_null_value_round_trips(client: Any) -> None:
    """A JSON null value is stored and read back as None, not dropped."""
    client.create("nothing", None)
    assert client.get("nothing").value is None


def test_key_is_percent_encoded_in_the_path(client: Any, server: FaultServer) -> None:
    """Reserved characters in a key are escaped so the key stays one path segment."""
    client.create("user:42@home", "x")
    assert client.get("user:42@home").value == "x"
    assert server.requests[-1].path == "/v1/items/user%3A42%40home"


def test_empty_key_is_refused_before_any_request(client: Any, server: FaultServer) -> None:
    """An empty key would address the collection, so it raises ValueError locally."""
    with pytest.raises(ValueError, match="empty"):
        client.get("")
    assert server.requests == []


def test_update_bumps_the_version(client: Any) -> None:
    """update returns the item with its version incremented."""
    client.create("counter", 1)
    assert client.update("counter", 2).version == 2


def test_if_version_is_sent_as_if_match(client: Any, server: FaultServer) -> None:
    """if_version becomes a quoted If-Match header and guards the update."""
    client.create("doc", "v1")
    client.update("doc", "v2", if_version=1)
    assert server.requests[-1].headers.get("If-Match") == '"1"'
    with pytest.raises(VersionMismatch):
        client.update("doc", "v3", if_version=1)
    assert client.get("doc").value == "v2"


def test_delete_removes_the_item(client: Any) -> None:
    """After delete, get raises NotFound."""
    client.create("gone", 1)
    assert client.delete("gone", if_version=1) is None
    with pytest.raises(NotFound):
        client.get("gone")


def test_list_sends_limit_cursor_and_prefix(client: Any, server: FaultServer) -> None:
    """list passes its arguments as query parameters and returns a Page."""
    for key in ("a1", "a2", "a3", "b1"):
        client.create(key, key)
    page = client.list(limit=2, prefix="a")
    assert isinstance(page, Page)
    assert [item.key for item in page.items] == ["a1", "a2"]
    assert page.next_cursor == "a2"
    rest = client.list(limit=2, cursor=page.next_cursor, prefix="a")
    assert [item.key for item in rest.items] == ["a3"] and rest.next_cursor is None
    assert server.requests[-1].path == "/v1/items?limit=2&cursor=a2&prefix=a"


def test_iter_items_follows_cursors_across_pages(client: Any, server: FaultServer) -> None:
    """iter_items yields every matching item in key order, one request per page."""
    keys = [f"k{i:02d}" for i in range(7)]
    for key in reversed(keys):
        client.create(key, key)
    client.create("other", 0)
    before = len(server.requests)
    assert [item.key for item in client.iter_items(prefix="k", page_size=3)] == keys
    assert len(server.requests) - before == 3


def test_api_key_is_sent_as_a_bearer_token(make_client: MakeClient, server: FaultServer) -> None:
    """api_key becomes `Authorization: Bearer <key>`, which the service requires."""
    server.kv.api_key = "s3cret"
    client = make_client(api_key="s3cret")
    client.create("private", 1)
    assert server.requests[0].headers.get("Authorization") == "Bearer s3cret"


def test_items_are_frozen(client: Any) -> None:
    """Returned items cannot be modified in place."""
    item = client.create("frozen", 1)
    with pytest.raises(AttributeError):
        item.value = 2  # type: ignore[misc]


def test_item_to_json_matches_the_wire_format(client: Any, server: FaultServer) -> None:
    """Item.to_json round-trips through Item.from_json unchanged."""
    item = client.create("wire", [1, 2])
    assert Item.from_json(json.loads(json.dumps(item.to_json()))) == item


def test_calls_after_close_raise(make_client: MakeClient, server: FaultServer) -> None:
    """A closed client refuses every call with ClientClosed, sending nothing."""
    client = make_client()
    client.create("k", 1)
    client.close()
    with pytest.raises(ClientClosed):
        client.get("k")
    assert len(server.requests) == 1


def test_iter_items_resumes_from_a_cursor(client: Any, server: FaultServer) -> None:
    """iter_items(start_cursor=...) yields only the items after that cursor."""
    for key in ("a", "b", "c", "d"):
        client.create(key, key)
    assert [item.key for item in client.iter_items(page_size=2, start_cursor="b")] == ["c", "d"]
    assert "cursor=b" in server.requests[-1].path
