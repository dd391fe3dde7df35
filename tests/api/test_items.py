"""CRUD on /v1/items over real HTTP, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import concurrent.futures

import httpx

PROBLEM = "application/problem+json"


def _create(api: httpx.Client, key: str, value: object = 1) -> httpx.Response:
    return api.post("/v1/items", json={"key": key, "value": value})


def test_create_returns_item_location_and_etag(api: httpx.Client, keyspace: str) -> None:
    """A create answers 201 with the item, its Location and ETag "1"."""
    key = keyspace + "a"
    response = _create(api, key, {"n": [1, 2.5, "x"]})
    assert response.status_code == 201
    assert response.headers["location"] == f"/v1/items/{key}"
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert body["key"] == key
    assert body["value"] == {"n": [1, 2.5, "x"]}
    assert body["version"] == 1
    assert body["created_at"] == body["updated_at"]
    assert body["created_at"].endswith("Z")


def test_read_returns_what_was_written(api: httpx.Client, keyspace: str) -> None:
    """GET returns the stored value and the same ETag."""
    key = keyspace + "read"
    _create(api, key, ["a", {"b": None}])
    response = api.get(f"/v1/items/{key}")
    assert response.status_code == 200
    assert response.json()["value"] == ["a", {"b": None}]
    assert response.headers["etag"] == '"1"'


def test_json_null_value_round_trips_as_null(api: httpx.Client, keyspace: str) -> None:
    """A top-level JSON null is stored as JSON null, not as a missing value."""
    key = keyspace + "null"
    assert _create(api, key, None).json()["value"] is None
    response = api.get(f"/v1/items/{key}")
    assert response.status_code == 200
    assert "value" in response.json()
    assert response.json()["value"] is None


def test_keys_differing_in_case_are_different_items(api: httpx.Client, keyspace: str) -> None:
    """ "a" and "A" are two keys on every backend (byte-wise collation)."""
    assert _create(api, keyspace + "a", "lower").status_code == 201
    assert _create(api, keyspace + "A", "upper").status_code == 201
    assert api.get(f"/v1/items/{keyspace}a").json()["value"] == "lower"
    assert api.get(f"/v1/items/{keyspace}A").json()["value"] == "upper"


def test_duplicate_create_is_409_and_keeps_the_original(api: httpx.Client, keyspace: str) -> None:
    """A second create of the same key is 409 key_exists and changes nothing."""
    key = keyspace + "dup"
    _create(api, key, "first")
    response = _create(api, key, "second")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "key_exists"
    assert api.get(f"/v1/items/{key}").json()["value"] == "first"


def test_missing_item_is_404_problem(api: httpx.Client, keyspace: str) -> None:
    """GET, PUT and DELETE of a missing key answer 404 not_found problems."""
    key = keyspace + "missing"
    for response in (
        api.get(f"/v1/items/{key}"),
        api.put(f"/v1/items/{key}", json={"value": 1}),
        api.delete(f"/v1/items/{key}"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "not_found"


def test_update_bumps_version_and_updated_at(api: httpx.Client, keyspace: str) -> None:
    """PUT replaces the value and increments the version by exactly one."""
    key = keyspace + "upd"
    created = _create(api, key, 1).json()
    response = api.put(f"/v1/items/{key}", json={"value": {"now": 2}})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["value"] == {"now": 2}
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] > created["updated_at"]
    assert response.headers["etag"] == '"2"'


def test_concurrent_updates_each_bump_the_version_once(api: httpx.Client, keyspace: str) -> None:
    """20 concurrent PUTs end at version 21: the bump is atomic, no update is lost."""
    key = keyspace + "race"
    _create(api, key, 0)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(
            pool.map(
                lambda n: api.put(f"/v1/items/{key}", json={"value": n}).status_code, range(20)
            )
        )
    assert statuses == [200] * 20
    assert api.get(f"/v1/items/{key}").json()["version"] == 21


def test_delete_removes_the_item(api: httpx.Client, keyspace: str) -> None:
    """DELETE answers 204 with no body and the key is gone afterwards."""
    key = keyspace + "del"
    _create(api, key)
    response = api.delete(f"/v1/items/{key}")
    assert response.status_code == 204
    assert response.content == b""
    assert api.get(f"/v1/items/{key}").status_code == 404


def test_if_match_stale_version_is_412_and_changes_nothing(
    api: httpx.Client, keyspace: str
) -> None:
    """PUT and DELETE with a stale If-Match answer 412 version_mismatch; the item is untouched."""
    key = keyspace + "im"
    _create(api, key, "v1")
    api.put(f"/v1/items/{key}", json={"value": "v2"})
    stale = {"If-Match": '"1"'}
    put = api.put(f"/v1/items/{key}", json={"value": "lost"}, headers=stale)
    delete = api.delete(f"/v1/items/{key}", headers=stale)
    for response in (put, delete):
        assert response.status_code == 412
        assert response.json()["code"] == "version_mismatch"
        assert response.headers["etag"] == '"2"'
    assert api.get(f"/v1/items/{key}").json()["value"] == "v2"


def test_if_match_current_version_applies(api: httpx.Client, keyspace: str) -> None:
    """PUT and DELETE with the current version in If-Match succeed."""
    key = keyspace + "ok"
    _create(api, key, "v1")
    assert (
        api.put(f"/v1/items/{key}", json={"value": "v2"}, headers={"If-Match": '"1"'}).status_code
        == 200
    )
    assert api.delete(f"/v1/items/{key}", headers={"If-Match": '"2"'}).status_code == 204


def test_fifty_concurrent_creates_of_one_key_make_one_item(
    api: httpx.Client, keyspace: str
) -> None:
    """50 concurrent creates of one key: exactly one 201, the rest 409, no 5xx."""
    key = keyspace + "contended"
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda n: _create(api, key, n), range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 49
    winner = next(r for r in responses if r.status_code == 201).json()["value"]
    assert api.get(f"/v1/items/{key}").json()["value"] == winner
