"""Request and response shapes; also the OpenAPI document's schemas."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# 1..255 of these characters, but not "." or "..": URL clients (curl, requests, kvclient)
# normalise those path segments away, so such an item could never be read back. Written without
# look-ahead, which pydantic's regex engine (and many OpenAPI tools) lack.
_KEY_CHAR, _NOT_DOT = "[A-Za-z0-9._~:@-]", "[A-Za-z0-9_~:@-]"
KEY_PATTERN = (
    "^(?:"
    + "|".join(
        (
            rf"{_NOT_DOT}{_KEY_CHAR}{{0,254}}",  # not starting with a dot
            rf"\.{_NOT_DOT}{_KEY_CHAR}{{0,253}}",  # one dot, then something else
            rf"\.\.{_KEY_CHAR}{{1,253}}",  # two dots, then anything
        )
    )
    + ")$"
)
KEY_RE = re.compile(KEY_PATTERN)
PREFIX_PATTERN = r"^[A-Za-z0-9._~:@-]{0,255}$"

Key = Annotated[str, Field(pattern=KEY_PATTERN, min_length=1, max_length=255)]


class ItemCreate(BaseModel):
    """Body of POST /v1/items."""

    model_config = ConfigDict(extra="forbid")
    key: Key
    value: Any = Field(..., description="Any JSON value, null included.")


class ItemUpdate(BaseModel):
    """Body of PUT /v1/items/{key}."""

    model_config = ConfigDict(extra="forbid")
    value: Any = Field(..., description="Any JSON value, null included.")


class ItemOut(BaseModel):
    """An item as returned by the API."""

    key: str
    value: Any
    version: int = Field(..., ge=1)
    created_at: datetime
    updated_at: datetime


class PageOut(BaseModel):
    """One page of items in key order."""

    items: list[ItemOut]
    next_cursor: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    """Body of GET /healthz."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Body of GET /readyz: each dependency up or down (Redis only when it backs the limiter)."""

    status: Literal["ok", "unavailable"]
    database: Literal["up", "down"]
    redis: Literal["up", "down"] | None = None
    # Present while the replica drains at shutdown (KV_SHUTDOWN_DRAIN_SECONDS): the 503 that
    # takes it out of a load balancer's rotation, not a dependency down.
    shutdown: Literal["draining"] | None = None
