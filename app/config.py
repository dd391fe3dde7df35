"""The one typed settings object, read from the environment and `.env`.

Every value is parsed once, by a validator, into the type the code uses: lists, networks, rates.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MIN_API_KEY_LENGTH = 16


class RateQuota(NamedTuple):
    """At most `limit` requests in any `window` seconds."""

    limit: int
    window: int


def _parse_rate(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    match = _RATE.match(value)
    if not match:
        raise ValueError("expected '<count>/<period>', e.g. '60/minute' or '100/10second'")
    count, multiple, unit = match.groups()
    return RateQuota(int(count), int(multiple or 1) * _PERIOD_SECONDS[unit])


def _split_commas(value: Any) -> Any:
    """A comma-separated string as a tuple of its non-blank parts; other input unchanged."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _split_keys(value: Any) -> Any:
    """Like _split_commas, but a value that is not empty must name at least one key: a list of
    blanks (" , ,") would otherwise turn authentication off without a word."""
    keys = _split_commas(value)
    if isinstance(value, str) and value and not keys:
        raise ValueError("holds no key: unset it to run without authentication, or list the keys")
    return keys


def _unset_if_blank(value: Any) -> Any:
    """A blank value means "not set" (compose and Kubernetes pass empty strings): the default."""
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault
    return value


def _parse_networks(value: Any) -> Any:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in _split_commas(value))


class Settings(BaseSettings):
    """Every knob of the service; documented in `.env.example` and the README."""

    # A refused value is never echoed: it may be a secret.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    # URLs may hold passwords: secret types, so no repr, log or error shows them.
    database_url: SecretStr = Field(
        SecretStr("sqlite:///kvkit.sqlite3"), validation_alias="DATABASE_URL"
    )
    redis_url: SecretStr | None = Field(None, validation_alias="REDIS_URL")
    # Both set: the limiter asks these sentinels for the master of this service, and REDIS_URL
    # (optional then) gives only the database number, the password and TLS, not host and port.
    redis_sentinels: Annotated[tuple[tuple[str, int], ...], NoDecode] = Field(
        (), validation_alias="KV_REDIS_SENTINELS"
    )
    redis_sentinel_master: str | None = Field(None, validation_alias="KV_REDIS_SENTINEL_MASTER")

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: Any) -> Any:
        """`host:port,host:port` (IPv6 as `[::1]:26379`) as the pairs redis-py takes."""
        if not isinstance(value, str):
            return value
        sentinels = []
        for part in _split_commas(value):
            host, colon, port = part.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError("expected host:port[,host:port...], e.g. 'sentinel-0:26379'")
            sentinels.append((host, int(port)))
        return tuple(sentinels)

    @model_validator(mode="after")
    def _check_sentinel(self) -> Settings:
        """Half a Sentinel configuration would silently fall back to REDIS_URL's host: refuse."""
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError(
                "KV_REDIS_SENTINELS and KV_REDIS_SENTINEL_MASTER go together: set both, or neither"
            )
        url = self.redis_url.get_secret_value() if self.redis_url else ""
        if self.redis_sentinels and url.startswith("unix:"):
            raise ValueError("with KV_REDIS_SENTINELS, REDIS_URL must be redis:// or rediss://")
        return self

    rate_limit: Annotated[RateQuota, NoDecode, BeforeValidator(_parse_rate)] = Field(
        RateQuota(60, 60), validation_alias="KV_RATE_LIMIT"
    )
    rate_limit_on_redis_error: Literal["open", "closed"] = Field(
        "open", validation_alias="KV_RATE_LIMIT_ON_REDIS_ERROR"
    )
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode, BeforeValidator(_parse_networks)] = (
        Field((), validation_alias="KV_TRUSTED_PROXIES")
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_keys)] = Field(
        (), validation_alias="KV_API_KEYS"
    )

    idempotency_ttl: int = Field(86400, ge=60, validation_alias="KV_IDEMPOTENCY_TTL")
    max_value_bytes: int = Field(65536, ge=16, validation_alias="KV_MAX_VALUE_BYTES")
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias="KV_MAX_BODY_BYTES")

    db_threads: int = Field(4, ge=1, le=64, validation_alias="KV_DB_THREADS")
    db_queue_size: int = Field(128, ge=1, le=100_000, validation_alias="KV_DB_QUEUE_SIZE")
    db_timeout: float = Field(5.0, gt=0, le=120, validation_alias="KV_DB_TIMEOUT")
    db_idle_timeout: float = Field(60.0, gt=0, validation_alias="KV_DB_IDLE_TIMEOUT")
    # false: every statement is safe behind a transaction pooler (PgBouncer pool_mode=transaction):
    # no named prepared statements, no `options` startup parameter, and the request bounds set by
    # SET LOCAL inside each transaction instead (app/store/dialects/postgresql.py).
    db_prepared_statements: bool = Field(True, validation_alias="KV_DB_PREPARED_STATEMENTS")
    redis_timeout: float = Field(0.05, gt=0, le=5, validation_alias="KV_REDIS_TIMEOUT")
    # migrate and purge-idempotency: how long to wait for a lock another replica holds (the
    # migration lock, a table lock), and a statement bound, none by default (0).
    migrate_lock_timeout: float = Field(
        300.0, gt=0, le=86400, validation_alias="KV_MIGRATE_LOCK_TIMEOUT"
    )
    migrate_statement_timeout: float = Field(
        0.0, ge=0, le=86400, validation_alias="KV_MIGRATE_STATEMENT_TIMEOUT"
    )
    # The URL migrate and purge-idempotency use: a direct one, where DATABASE_URL is a pooler (the
    # migration lock is held by a session). Unset or blank: DATABASE_URL.
    migrate_database_url: Annotated[SecretStr, BeforeValidator(_unset_if_blank)] = Field(
        default_factory=lambda data: data["database_url"],
        validation_alias="KV_MIGRATE_DATABASE_URL",
    )
    # Rows purge-idempotency deletes per transaction: each batch holds its row locks briefly.
    purge_batch_size: int = Field(1000, ge=1, le=100_000, validation_alias="KV_PURGE_BATCH_SIZE")
    # Seconds a client may take to send a request's headers (from its first byte, or from the
    # connection's opening), and then its body; past them the connection is closed
    # (app/server/protocol.py).
    header_timeout: float = Field(10.0, gt=0, le=3600, validation_alias="KV_HEADER_TIMEOUT")
    body_timeout: float = Field(30.0, gt=0, le=3600, validation_alias="KV_BODY_TIMEOUT")
    # Seconds gunicorn's SIGTERM first keeps serving with /readyz 503 and Connection: close, so a
    # balancer that learns from health checks stops sending first (app/server/drain.py). 0: none
    # (in Kubernetes, the preStop sleep does this before SIGTERM).
    shutdown_drain_seconds: float = Field(
        0.0, ge=0, le=600, validation_alias="KV_SHUTDOWN_DRAIN_SECONDS"
    )

    # Set: /metrics is served on this port only, off the API port (app/observability/exporter.py).
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="KV_METRICS_PORT")
    # A scrape is answered from a collection at most this old: scrapers cost one collection per
    # interval, however many there are. 0 collects for every scrape.
    metrics_min_interval: float = Field(
        1.0, ge=0, le=60, validation_alias="KV_METRICS_MIN_INTERVAL"
    )
    docs: bool = Field(True, validation_alias="KV_DOCS")  # /docs and /openapi.json

    log_format: Literal["json", "text"] = Field("json", validation_alias="LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(key.get_secret_value()) < MIN_API_KEY_LENGTH for key in keys):
            raise ValueError(f"every key must be at least {MIN_API_KEY_LENGTH} characters long")
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
