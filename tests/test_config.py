"""The settings object: defaults, parsing, and refusing unsafe values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def test_defaults_are_the_embedded_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset means SQLite in the working directory, in-process limiter, 60 per minute."""
    for name in ("DATABASE_URL", "REDIS_URL", "KV_RATE_LIMIT", "KV_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    settings = _settings()
    assert settings.database_url == "sqlite:///kvkit.sqlite3"
    assert settings.redis_url is None
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
