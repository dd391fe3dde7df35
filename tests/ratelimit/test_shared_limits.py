"""The Redis limiter over real processes: exact across workers, replicas, flushes and outages."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from tests.conftest import PrivateRedis, Server, ServerFactory, service_env, start_server


def _hit(server: Server, key: str, path: str = "/v1/items/absent") -> httpx.Response:
    # A fresh connection per request, so gunicorn spreads them over its workers.
    return httpx.get(
        server.url + path, headers={"X-API-Key": key, "Connection": "close"}, timeout=10
    )


def _passed(responses: list[httpx.Response]) -> int:
    return sum(r.status_code != 429 for r in responses)


def test_exactly_the_limit_passes_across_four_gunicorn_workers(
    server_factory: ServerFactory, redis_url: str, api_keys: list[str]
) -> None:
    """80 requests from one client via 4 workers: exactly 60 pass; another client is unaffected."""
    server = server_factory(
        "postgres",
        workers=4,
        REDIS_URL=redis_url,
        KV_RATE_LIMIT="60/minute",
        KV_API_KEYS=",".join(api_keys),
    )
    first, second = api_keys
    responses = [_hit(server, first) for _ in range(80)]
    assert [r.status_code for r in responses] == [404] * 60 + [429] * 20
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in responses[:60]]
    assert remaining == list(range(59, -1, -1))
    for response in responses[:60]:
        assert "retry-after" not in response.headers
        assert response.headers["RateLimit-Policy"] == '"default";q=60;w=60'
        r, t = response.headers["RateLimit"].removeprefix('"default";').split(";")
        assert r == f"r={response.headers['RateLimit-Remaining']}"
        assert t == f"t={response.headers['RateLimit-Reset']}" and 1 <= int(t[2:]) <= 60
    for response in responses[60:]:
        assert response.json()["code"] == "rate_limited"
        assert response.headers["content-type"] == "application/problem+json"
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert response.headers["RateLimit"] == f'"default";r=0;t={retry_after}'
    other = _hit(server, second)
    assert other.status_code == 404 and other.headers["RateLimit-Remaining"] == "59"


def _skewed_server(tmp_path: Path, redis_url: str, keys: str, skew: float, database: str) -> Server:
    site = tmp_path / f"skew{skew:+.0f}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import time\n_real = time.time\n"
        f"time.time = lambda: _real() + {skew}\n"
        "_real_ns = time.time_ns\n"
        f"time.time_ns = lambda: _real_ns() + {int(skew * 1e9)}\n"
    )
    env = service_env(
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        KV_API_KEYS=keys,
        KV_RATE_LIMIT="60/minute",
        PYTHONPATH=str(site),
    )
    return start_server(tmp_path, env)


def test_skewed_app_clocks_do_not_change_the_total(
    tmp_path: Path, redis_url: str, api_keys: list[str], databases: object
) -> None:
    """Two replicas whose clocks differ by two hours share one exact limit (Redis time rules)."""
    database = databases.url("sqlite")  # type: ignore[attr-defined]
    keys = ",".join(api_keys)
    ahead = _skewed_server(tmp_path, redis_url, keys, 3600, database)
    behind = _skewed_server(tmp_path, redis_url, keys, -3600, database)
    try:
        responses = [_hit(ahead if n % 2 else behind, api_keys[0]) for n in range(80)]
    finally:
        ahead.stop()
        behind.stop()
    assert _passed(responses) == 60
    assert [r.status_code for r in responses[60:]] == [429] * 20


def test_script_flush_mid_run_keeps_the_limit_exact(
    server_factory: ServerFactory, redis_url: str, api_keys: list[str]
) -> None:
    """After SCRIPT FLUSH the script is reloaded and counting continues where it was."""
    server = server_factory(
        REDIS_URL=redis_url, KV_RATE_LIMIT="60/minute", KV_API_KEYS=",".join(api_keys)
    )
    before = [_hit(server, api_keys[0]) for _ in range(30)]
    redis.Redis.from_url(redis_url).script_flush()
    after = [_hit(server, api_keys[0]) for _ in range(50)]
    assert _passed(before) == 30
    assert _passed(after) == 30
    assert all(r.status_code in (404, 429) for r in after)


def test_window_boundary_gives_no_second_burst(
    server_factory: ServerFactory, redis_url: str, api_keys: list[str]
) -> None:
    """A full window blocks until its oldest request is a whole window old, then frees up again."""
    server = server_factory(REDIS_URL=redis_url, KV_RATE_LIMIT="5/2second", KV_API_KEYS=api_keys[0])
    started = time.monotonic()
    assert _passed([_hit(server, api_keys[0]) for _ in range(5)]) == 5
    time.sleep(max(0.0, started + 1.2 - time.monotonic()))
    assert _passed([_hit(server, api_keys[0]) for _ in range(5)]) == 0
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    assert _passed([_hit(server, api_keys[0]) for _ in range(5)]) == 5


def test_bucket_keys_always_carry_a_ttl(
    server_factory: ServerFactory, private_redis: PrivateRedis, api_keys: list[str]
) -> None:
    """Every key the limiter writes expires by itself."""
    server = server_factory(REDIS_URL=private_redis.url, KV_API_KEYS=",".join(api_keys))
    for key in api_keys:
        _hit(server, key)
    client = private_redis.client()
    keys = list(client.scan_iter("kvkit:rl:*"))
    assert len(keys) == 2
    assert all(0 < client.pttl(key) <= 61_000 for key in keys)


def test_health_and_metrics_are_exempt(server_factory: ServerFactory, redis_url: str) -> None:
    """/healthz and /readyz are never limited and carry no RateLimit headers."""
    server = server_factory(REDIS_URL=redis_url, KV_RATE_LIMIT="1/minute")
    for path in ["/healthz", "/readyz"] * 5:
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        assert "ratelimit" not in response.headers and "retry-after" not in response.headers


def test_redis_outage_open_policy_falls_back_and_recovers(
    server_factory: ServerFactory, private_redis: PrivateRedis, api_keys: list[str]
) -> None:
    """Redis down: answers stay fast and limited per process; Redis back: shared limits return."""
    server = server_factory(
        REDIS_URL=private_redis.url, KV_RATE_LIMIT="5/minute", KV_API_KEYS=api_keys[0]
    )
    assert _passed([_hit(server, api_keys[0]) for _ in range(3)]) == 3
    private_redis.stop()
    timings, responses = [], []
    for _ in range(8):
        started = time.monotonic()
        responses.append(_hit(server, api_keys[0]))
        timings.append(time.monotonic() - started)
    assert [r.status_code for r in responses] == [404] * 5 + [429] * 3  # fallback: 5 per process
    assert max(timings) < 1.0, timings
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] == "down"

    private_redis.start()
    deadline = time.monotonic() + 10
    while not list(private_redis.client().scan_iter("kvkit:rl:*")):
        assert time.monotonic() < deadline, "limiter did not return to Redis"
        _hit(server, api_keys[0])
        time.sleep(0.2)
    # /readyz answers from a check at most a second old.
    deadline = time.monotonic() + 3
    while httpx.get(server.url + "/readyz").json()["redis"] != "up":
        assert time.monotonic() < deadline, "/readyz still reports Redis down 3 s after it returned"
        time.sleep(0.1)
    assert "Traceback" not in server.log()
    assert server.log().count("cannot reach Redis") == 1  # logged once per outage


def test_redis_outage_closed_policy_answers_503(
    server_factory: ServerFactory, private_redis: PrivateRedis, api_keys: list[str]
) -> None:
    """With the closed policy a Redis outage is a fast 503 with Retry-After, and readiness fails."""
    server = server_factory(
        REDIS_URL=private_redis.url, KV_RATE_LIMIT_ON_REDIS_ERROR="closed", KV_API_KEYS=api_keys[0]
    )
    assert _hit(server, api_keys[0]).status_code == 404
    private_redis.stop()
    started = time.monotonic()
    response = _hit(server, api_keys[0])
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503 and response.json()["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert httpx.get(server.url + "/readyz").status_code == 503
    private_redis.start()
    deadline = time.monotonic() + 10
    while _hit(server, api_keys[0]).status_code != 404:
        assert time.monotonic() < deadline, "service did not recover when Redis returned"
        time.sleep(0.2)
