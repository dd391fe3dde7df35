"""API keys: nothing under /v1 answers without one, and no key ever leaks."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, ServerFactory

ROUTES = [
    ("GET", "/v1/items"),
    ("POST", "/v1/items"),
    ("GET", "/v1/items/k"),
    ("PUT", "/v1/items/k"),
    ("DELETE", "/v1/items/k"),
    ("PATCH", "/v1/items/k"),
    ("GET", "/v1/nothing-here"),
]


@pytest.fixture(scope="module")
def secured(server_factory: ServerFactory) -> tuple[Server, str]:
    key = "test-key-" + "9" * 24
    return server_factory(KV_API_KEYS=f"{key},other-key-{'1' * 20}", LOG_LEVEL="INFO"), key


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("presented", [None, "Bearer wrong-key-000000000000", "Basic abc"])
def test_every_route_refuses_without_a_valid_key(
    secured: tuple[Server, str], method: str, path: str, presented: str | None
) -> None:
    """Every /v1 route and method is 401 unauthorized without a valid key."""
    server, _ = secured
    headers = {"Authorization": presented} if presented else {}
    response = httpx.request(
        method, server.url + path, headers=headers, json={"key": "k", "value": 1}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_valid_key_is_accepted_in_either_header(secured: tuple[Server, str], header: str) -> None:
    """A configured key passes as a Bearer token or as X-API-Key."""
    server, key = secured
    value = f"Bearer {key}" if header == "Authorization" else key
    assert httpx.get(server.url + "/v1/items", headers={header: value}).status_code == 200


def test_health_needs_no_key(secured: tuple[Server, str]) -> None:
    """Probes stay open so orchestrators can call them."""
    server, _ = secured
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_keys_never_appear_in_bodies_or_logs(secured: tuple[Server, str]) -> None:
    """Neither a valid nor a wrong key shows up in any response body or the server log."""
    server, key = secured
    wrong = "wrong-key-" + "7" * 20
    bodies = [
        httpx.get(server.url + "/v1/items/none", headers={"X-API-Key": key}).text,
        httpx.get(server.url + "/v1/items", headers={"X-API-Key": wrong}).text,
        httpx.post(
            server.url + "/v1/items",
            headers={"X-API-Key": key},
            json={"key": "bad key", "value": 1},
        ).text,
    ]
    for text in [*bodies, server.log()]:
        assert key not in text and wrong not in text
