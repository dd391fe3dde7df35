"""Unexpected methods: a 405 problem naming every allowed method, and HEAD served like GET."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server
from tests.hostile.wire import Wire

ITEM_METHODS = "DELETE, GET, HEAD, PUT"
COLLECTION_METHODS = "GET, HEAD, POST"


@pytest.mark.parametrize("method", ["PATCH", "POST", "OPTIONS", "TRACE", "PROPFIND", "PURGE"])
def test_unsupported_method_on_an_item_lists_every_allowed_method(
    pg_wire: Wire, method: str
) -> None:
    """An item answers other methods with 405 and an Allow naming GET, HEAD, PUT and DELETE."""
    response = pg_wire.request(method, "/v1/items/abc")
    response.problem(405, "method_not_allowed")
    assert response.header("allow") == ITEM_METHODS


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE", "OPTIONS"])
def test_unsupported_method_on_the_collection_lists_every_allowed_method(
    pg_wire: Wire, method: str
) -> None:
    """The collection answers other methods with 405 and an Allow naming GET, HEAD and POST."""
    response = pg_wire.request(method, "/v1/items")
    response.problem(405, "method_not_allowed")
    assert response.header("allow") == COLLECTION_METHODS


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST"])
def test_probes_answer_get_only(pg_wire: Wire, path: str, method: str) -> None:
    """The probes serve GET alone: anything else, HEAD included, is 405 with Allow: GET."""
    response = pg_wire.request(method, path)
    assert response.status == 405
    assert response.header("allow") == "GET"
    if method != "HEAD":
        response.problem(405, "method_not_allowed")


def test_unknown_method_token_is_refused_by_the_parser(pg_wire: Wire) -> None:
    """A method the HTTP parser does not know (BREW) is its plain 400, before the app runs."""
    pg_wire.request("BREW", "/v1/items/abc").parser_refusal()


def test_head_on_an_item_answers_like_get_without_a_body(
    postgres_server: Server, keyspace: str
) -> None:
    """HEAD on an item has GET's status, ETag and Content-Length, and no body on the wire."""
    key = keyspace + "head"
    connection = _connection(postgres_server)
    body = json.dumps({"key": key, "value": [1, 2]})
    connection.request("POST", "/v1/items", body, {"Content-Type": "application/json"})
    connection.getresponse().read()
    connection.request("GET", f"/v1/items/{key}")
    get = connection.getresponse()
    get_body = get.read()
    connection.request("HEAD", f"/v1/items/{key}")
    head = connection.getresponse()
    assert head.read() == b""
    assert head.status == 200
    assert head.getheader("etag") == get.getheader("etag") == '"1"'
    assert head.getheader("content-length") == str(len(get_body))
    # Stray body bytes after the HEAD answer would corrupt the next answer on this connection.
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()


def test_head_on_a_missing_item_is_404_without_a_body(pg_wire: Wire) -> None:
    """HEAD on a missing item is GET's 404, headers only."""
    response = pg_wire.request("HEAD", "/v1/items/no-such-item")
    assert response.status == 404
    assert response.header("content-type") == "application/problem+json"
    assert response.body == b""


def test_head_on_the_collection_answers_like_get(pg_wire: Wire) -> None:
    """HEAD on the collection is 200 with GET's headers and no body."""
    response = pg_wire.request("HEAD", "/v1/items?limit=1")
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert response.body == b""


def test_head_is_not_in_the_openapi_document(pg_wire: Wire) -> None:
    """The schema documents GET; HEAD is implied by it (RFC 9110) and not a second operation."""
    response = pg_wire.request("GET", "/openapi.json")
    paths = json.loads(response.body)["paths"]
    assert set(paths["/v1/items/{key}"]) == {"get", "put", "delete"}
    assert set(paths["/v1/items"]) == {"get", "post"}


def _connection(server: Server) -> http.client.HTTPConnection:
    parts = urlsplit(server.url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
