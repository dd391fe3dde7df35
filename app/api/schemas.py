"""Request and response shapes; also the OpenAPI document's schemas."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KEY_PATTERN = r"^[A-Za-z0-9._~:@-]{1,255}$"
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
