"""The one typed settings object, read from the environment and `.env`."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class Settings(BaseSettings):
    """Every knob of the service; documented in `.env.example` and the README."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///kvkit.sqlite3", validation_alias="DATABASE_URL")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")

    rate_limit: str = Field("60/minute", validation_alias="KV_RATE_LIMIT")
    rate_limit_on_redis_error: Literal["open", "closed"] = Field(
        "open", validation_alias="KV_RATE_LIMIT_ON_REDIS_ERROR"
    )
    trusted_proxies: str = Field("", validation_alias="KV_TRUSTED_PROXIES")
    api_keys: str = Field("", validation_alias="KV_API_KEYS", repr=False)

    idempotency_ttl: int = Field(86400, ge=60, validation_alias="KV_IDEMPOTENCY_TTL")
    max_value_bytes: int = Field(65536, ge=16, validation_alias="KV_MAX_VALUE_BYTES")
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias="KV_MAX_BODY_BYTES")

    db_threads: int = Field(4, ge=1, le=64, validation_alias="KV_DB_THREADS")
    db_timeout: float = Field(5.0, gt=0, le=120, validation_alias="KV_DB_TIMEOUT")
    db_idle_timeout: float = Field(60.0, gt=0, validation_alias="KV_DB_IDLE_TIMEOUT")
    redis_timeout: float = Field(0.05, gt=0, le=5, validation_alias="KV_REDIS_TIMEOUT")

    log_format: Literal["json", "text"] = Field("json", validation_alias="LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if not _RATE.match(value):
            raise ValueError("expected '<count>/<period>', e.g. '60/minute' or '100/10second'")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for cidr in _split(value):
            ipaddress.ip_network(cidr, strict=False)
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if any(len(key) < 16 for key in self.api_key_list):
            raise ValueError("KV_API_KEYS: every key must be at least 16 characters long")
        return self

    @property
    def rate_limit_quota(self) -> tuple[int, int]:
        """The limit as (requests, window seconds)."""
        match = _RATE.match(self.rate_limit)
        assert match is not None  # validated above
        count, multiple, unit = match.groups()
        return int(count), int(multiple or 1) * _PERIOD_SECONDS[unit]

    @property
    def api_key_list(self) -> tuple[str, ...]:
        return tuple(_split(self.api_keys))

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in _split(self.trusted_proxies)
        )


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
