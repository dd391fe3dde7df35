"""The settings object: defaults, parsing, and refusing unsafe values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.conftest import free_port, service_env


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def test_defaults_are_the_embedded_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset means SQLite in the working directory, in-process limiter, 60 per minute."""
    for name in ("DATABASE_URL", "REDIS_URL", "KV_RATE_LIMIT", "KV_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    settings = _settings()
    assert settings.database_url.get_secret_value() == "sqlite:///kvkit.sqlite3"
    assert settings.redis_url is None
    assert (settings.metrics_port, settings.docs) == (None, True)
    assert settings.rate_limit == (60, 60)
    assert settings.api_keys == ()


@pytest.mark.parametrize(
    ("text", "quota"),
    [
        ("60/minute", (60, 60)),
        ("10/second", (10, 1)),
        ("100/10seconds", (100, 10)),
        ("5/hour", (5, 3600)),
    ],
)
def test_rate_limit_is_parsed(
    monkeypatch: pytest.MonkeyPatch, text: str, quota: tuple[int, int]
) -> None:
    """KV_RATE_LIMIT reads as (requests, window seconds)."""
    monkeypatch.setenv("KV_RATE_LIMIT", text)
    assert _settings().rate_limit == quota


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KV_RATE_LIMIT", "sixty"),
        ("KV_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("KV_API_KEYS", "short"),
        ("KV_RATE_LIMIT_ON_REDIS_ERROR", "maybe"),
        ("KV_DB_THREADS", "0"),
    ],
)
def test_unsafe_or_malformed_values_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A malformed knob stops start-up with a validation error instead of running misconfigured."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        _settings()


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    """KV_API_KEYS and KV_TRUSTED_PROXIES split on commas and ignore blanks."""
    monkeypatch.setenv("KV_API_KEYS", "k" * 16 + ", " + "m" * 20 + ",")
    monkeypatch.setenv("KV_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    settings = _settings()
    assert [key.get_secret_value() for key in settings.api_keys] == ["k" * 16, "m" * 20]
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]


def test_api_keys_are_not_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Printing the settings never prints a secret."""
    monkeypatch.setenv("KV_API_KEYS", "s3cret-s3cret-s3cret")
    assert "s3cret" not in repr(_settings())


def test_a_refused_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key refused as too short never appears in the error that stops start-up."""
    monkeypatch.setenv("KV_API_KEYS", "long-enough-secret-key, sh0rt-s3cret")
    with pytest.raises(ValidationError) as refused:
        _settings()
    assert "sh0rt-s3cret" not in str(refused.value)
    assert "long-enough-secret-key" not in str(refused.value)
    assert "KV_API_KEYS" in str(refused.value)


def test_queue_size_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    """KV_DB_QUEUE_SIZE bounds the jobs waiting for a database thread; 0 would refuse all."""
    monkeypatch.setenv("KV_DB_QUEUE_SIZE", "0")
    with pytest.raises(ValidationError):
        _settings()
    monkeypatch.setenv("KV_DB_QUEUE_SIZE", "7")
    assert _settings().db_queue_size == 7


@pytest.mark.parametrize("blank", [" , ,, ", " ", ","])
def test_a_key_list_of_blanks_refuses_to_start(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """KV_API_KEYS set to separators only is a mistake, not a request to turn auth off."""
    monkeypatch.setenv("KV_API_KEYS", blank)
    with pytest.raises(ValidationError, match="holds no key"):
        _settings()


def test_urls_with_passwords_never_show_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database and Redis URLs are secrets: printing the settings shows neither password."""
    monkeypatch.setenv("DATABASE_URL", "postgres://kvkit:db-Pa55word@db.internal/kvkit")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-Pa55word@cache.internal:6379/0")
    text = repr(_settings()) + str(_settings())
    assert "db-Pa55word" not in text and "redis-Pa55word" not in text


def test_refused_settings_print_no_secret_when_the_service_starts(tmp_path: Path) -> None:
    """uvicorn started with a bad key list exits, and its output names the setting but holds
    neither the keys nor the database password."""
    env = service_env(
        DATABASE_URL="postgres://kvkit:db-Pa55word@127.0.0.1:9/kvkit",
        KV_API_KEYS="a-long-enough-secret-key,sh0rt-s3cret",
        KV_RATE_LIMIT="sixty",
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
    assert "KV_API_KEYS" in output and "KV_RATE_LIMIT" in output
    for secret in ("db-Pa55word", "sh0rt-s3cret", "a-long-enough-secret-key"):
        assert secret not in output
