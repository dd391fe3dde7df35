"""KV_REDIS_SENTINELS and KV_REDIS_SENTINEL_MASTER: parsed once, refused when half set, and
what the limiter's client takes from REDIS_URL when they are set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from app.config import Settings
from app.ratelimit.factory import build_limiter
from app.ratelimit.redis import MasterPool, RedisLimiter
from tests.conftest import free_port, service_env


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def _no_outside_redis_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "KV_REDIS_SENTINELS", "KV_REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)


def test_sentinels_are_host_port_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A comma-separated list reads as (host, port) pairs; IPv6 hosts come in brackets."""
    monkeypatch.setenv("KV_REDIS_SENTINELS", " sentinel-0:26379, [::1]:26380 ,10.0.0.7:5000,")
    monkeypatch.setenv("KV_REDIS_SENTINEL_MASTER", "kvkit")
    settings = _settings()
    assert settings.redis_sentinels == (("sentinel-0", 26379), ("::1", 26380), ("10.0.0.7", 5000))
    assert settings.redis_sentinel_master == "kvkit"


@pytest.mark.parametrize("value", ["sentinel-0", "sentinel-0:", ":26379", "s:0", "s:65536", "s:x"])
def test_a_sentinel_without_a_valid_port_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Each entry needs a host and a port in 1-65535."""
    monkeypatch.setenv("KV_REDIS_SENTINELS", value)
    monkeypatch.setenv("KV_REDIS_SENTINEL_MASTER", "kvkit")
    with pytest.raises(ValidationError, match="host:port"):
        _settings()


@pytest.mark.parametrize(
    "env",
    [{"KV_REDIS_SENTINELS": "127.0.0.1:26379"}, {"KV_REDIS_SENTINEL_MASTER": "kvkit"}],
)
def test_half_a_sentinel_configuration_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """One of the two without the other would quietly use REDIS_URL's host: refused."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="go together"):
        _settings()


def test_sentinel_with_a_unix_socket_url_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unix:// REDIS_URL has no host and port for the sentinels to replace."""
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis.sock?db=2")
    monkeypatch.setenv("KV_REDIS_SENTINELS", "127.0.0.1:26379")
    monkeypatch.setenv("KV_REDIS_SENTINEL_MASTER", "kvkit")
    with pytest.raises(ValidationError, match="redis:// or rediss://"):
        _settings()


def _master_pool(monkeypatch: pytest.MonkeyPatch, url: str | None) -> MasterPool:
    if url is not None:
        monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("KV_REDIS_SENTINELS", "127.0.0.1:26379,127.0.0.1:26380")
    monkeypatch.setenv("KV_REDIS_SENTINEL_MASTER", "kvkit")
    limiter = build_limiter(_settings())
    assert isinstance(limiter, RedisLimiter)
    pool = limiter.redis.connection_pool
    assert isinstance(pool, MasterPool)
    return pool


def test_redis_url_gives_database_and_credentials_not_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Sentinel, REDIS_URL's database, user and password reach the master's connections;
    its host and port are never used, and the sentinels get no password."""
    pool = _master_pool(monkeypatch, "redis://kv:s3cret@ignored.invalid:1/3")
    options = pool.connection_kwargs
    assert (options["db"], options["username"], options["password"]) == (3, "kv", "s3cret")
    assert "host" not in options and "port" not in options
    assert pool.connection_class is SentinelManagedConnection
    assert (pool.service_name, pool.is_master) == ("kvkit", True)
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    for sentinel in sentinels:
        assert sentinel.connection_pool.connection_kwargs.get("password") is None
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 0.05


def test_rediss_url_means_tls_to_master_and_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    """rediss:// (with its ssl_* options) applies TLS to the master and to the sentinels."""
    pool = _master_pool(monkeypatch, "rediss://:pw@ignored/0?ssl_cert_reqs=none")
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    for sentinel in pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
        assert sentinel.connection_pool.connection_class.__name__ == "SSLConnection"


def test_sentinel_without_redis_url_uses_database_0_without_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The two Sentinel settings alone turn the Redis limiter on: database 0, no password."""
    pool = _master_pool(monkeypatch, None)
    assert pool.connection_kwargs.get("db", 0) == 0
    assert pool.connection_kwargs.get("password") is None


def test_half_a_sentinel_configuration_stops_the_service_with_a_clear_message(
    tmp_path: Path,
) -> None:
    """uvicorn exits, naming both settings, and prints no password from REDIS_URL."""
    env = service_env(
        REDIS_URL="redis://:redis-Pa55word@127.0.0.1:6379/0", KV_REDIS_SENTINELS="127.0.0.1:1"
    )
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "KV_REDIS_SENTINELS and KV_REDIS_SENTINEL_MASTER go together" in output
    assert "redis-Pa55word" not in output
