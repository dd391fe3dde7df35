"""Behind a path prefix (uvicorn --root-path, as an ingress that strips /api needs), every /v1 route
still requires a key and is still rate limited."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Databases, Server, free_port, service_env, start_server

KEY = "root-path-key-" + "7" * 20


@pytest.fixture(params=["--root-path", "UVICORN_ROOT_PATH"])
def prefixed(
    request: pytest.FixtureRequest, tmp_path: Path, databases: Databases
) -> Iterator[Server]:
    """uvicorn serving the app below /api, given on the command line or in uvicorn's env var."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    command += ["--no-proxy-headers", "--log-level", "warning"]
    env = service_env(
        DATABASE_URL=databases.url("sqlite"), KV_API_KEYS=KEY, KV_RATE_LIMIT="60/minute"
    )
    if request.param == "--root-path":
        command += ["--root-path", "/api"]
    else:
        env["UVICORN_ROOT_PATH"] = "/api"
    server = start_server(tmp_path, env, command=command, port=port)
    yield server
    server.stop()


def test_a_write_without_a_key_is_refused_behind_a_root_path(
    prefixed: Server, keyspace: str
) -> None:
    """POST with no key is 401 and writes nothing; with the key it is 201."""
    client = prefixed.client()
    body = {"key": keyspace + "k", "value": 1}
    refused = client.post("/v1/items", json=body)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert client.get(f"/v1/items/{keyspace}k", headers={"X-API-Key": KEY}).status_code == 404
    assert client.post("/v1/items", json=body, headers={"X-API-Key": KEY}).status_code == 201


def test_the_prefix_itself_reaches_no_route(prefixed: Server, keyspace: str) -> None:
    """uvicorn puts the root path in front of the request path: /api/v1/... matches nothing and
    creates nothing (the ingress is the one that strips /api)."""
    client = prefixed.client()
    response = client.post("/api/v1/items", json={"key": keyspace + "p", "value": 1})
    assert response.status_code == 404
    assert client.get(f"/v1/items/{keyspace}p", headers={"X-API-Key": KEY}).status_code == 404


def test_requests_without_a_key_are_rate_limited_behind_a_root_path(prefixed: Server) -> None:
    """70 GETs with no key: each carries RateLimit headers, 60 are 401 and 10 are 429."""
    client = prefixed.client()
    responses = [client.get("/v1/items/anything") for _ in range(70)]
    assert all("ratelimit-policy" in r.headers for r in responses)
    assert Counter(r.status_code for r in responses) == {401: 60, 429: 10}


def test_routes_outside_v1_stay_open_behind_a_root_path(prefixed: Server) -> None:
    """The probes are not guarded behind the prefix either."""
    assert prefixed.client().get("/healthz").status_code == 200
