"""Keyset pagination: key order, stable cursors, and a walk that survives concurrent writes."""

from __future__ import annotations

import random
import threading
from urllib.parse import parse_qs, urlparse

import httpx


def _seed(api: httpx.Client, keys: list[str]) -> None:
    for key in keys:
        assert api.post("/v1/items", json={"key": key, "value": key}).status_code == 201


def _walk(api: httpx.Client, prefix: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"prefix": prefix, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/items", params=params)
        assert page.status_code == 200
        body = page.json()
        seen += [item["key"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            assert "link" not in page.headers
            return seen


def test_pages_are_in_byte_order_and_complete(api: httpx.Client, keyspace: str) -> None:
    """Walking all pages yields every key once, in byte order (upper case before lower)."""
    keys = [keyspace + k for k in ["b", "B", "a", "A", "0", "~", "a.b", "a-b", "a:b", "Z", "z"]]
    _seed(api, keys)
    assert _walk(api, keyspace, limit=3) == sorted(keys, key=lambda k: k.encode())


def test_prefix_is_case_sensitive(api: httpx.Client, keyspace: str) -> None:
    """prefix=a does not match keys starting with A, on every backend."""
    _seed(api, [keyspace + "a1", keyspace + "A1", keyspace + "ab"])
    assert _walk(api, keyspace + "a", limit=10) == [keyspace + "a1", keyspace + "ab"]


def test_link_header_points_at_the_next_page(api: httpx.Client, keyspace: str) -> None:
    """The Link rel="next" URL carries the same limit, prefix and the next cursor."""
    _seed(api, [keyspace + str(n) for n in range(3)])
    page = api.get("/v1/items", params={"prefix": keyspace, "limit": 2})
    link = page.headers["link"]
    assert link.endswith('>; rel="next"')
    query = parse_qs(urlparse(link[1 : link.index(">")]).query)
    assert query == {"limit": ["2"], "cursor": [page.json()["next_cursor"]], "prefix": [keyspace]}
    follow = api.get(link[1 : link.index(">")]).json()
    assert [item["key"] for item in follow["items"]] == [keyspace + "2"]


def test_default_limit_is_50(api: httpx.Client, keyspace: str) -> None:
    """Without limit a page holds 50 items."""
    _seed(api, [f"{keyspace}{n:03d}" for n in range(51)])
    body = api.get("/v1/items", params={"prefix": keyspace}).json()
    assert len(body["items"]) == 50
    assert body["next_cursor"] is not None


def test_walk_during_concurrent_writes_sees_stable_items_once(
    api: httpx.Client, keyspace: str
) -> None:
    """Items present for the whole walk appear exactly once, in order, while others churn."""
    stable = [f"{keyspace}s{n:04d}" for n in range(0, 400, 2)]
    _seed(api, stable)
    stop = threading.Event()
    errors: list[int] = []

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=str(api.base_url), timeout=30) as own:
            while not stop.is_set():
                key = f"{keyspace}s{rng.randrange(1, 400, 2):04d}"  # odd: never a stable key
                response = (
                    own.post("/v1/items", json={"key": key, "value": 0})
                    if rng.random() < 0.6
                    else own.delete(f"/v1/items/{key}")
                )
                if response.status_code not in (201, 204, 404, 409):
                    errors.append(response.status_code)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        walked = _walk(api, keyspace, limit=7)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert walked == sorted(walked) and len(walked) == len(set(walked))
    assert [key for key in walked if key in set(stable)] == stable
