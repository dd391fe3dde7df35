"""What the store takes and gives back: plain values, never model instances or callables."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """An item as stored; `value` is its JSON text."""

    key: str
    value: str
    version: int
    created_at: datetime
    updated_at: datetime


class WriteKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Claim:
    """A write's Idempotency-Key: it runs once per (client, key) until `ttl_seconds` pass."""

    client: str
    key: str
    fingerprint: str  # what the request asked for; the same key with another one is refused
    ttl_seconds: int
    request_id: str  # the request that made it, named again in a replay of its answer


@dataclass(frozen=True, slots=True)
class Write:
    """One create, update or delete of the item `key`.

    `value` is the JSON text to store (create and update); `expected_version` is If-Match
    (update and delete; None: unconditional). `context` is the requesting code's context (its
    trace and log fields): the store runs the write's own statements in it, so they show in the
    request's trace even when the write shares a transaction with others.
    """

    kind: WriteKind
    key: str
    value: str | None = None
    expected_version: int | None = None
    claim: Claim | None = None
    context: contextvars.Context | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.value is None) != (self.kind is WriteKind.DELETE):
            needed = "required" if self.value is None else "not allowed"
            raise ValueError(f"{self.kind}: a value is {needed}")
        if self.kind is WriteKind.CREATE and self.expected_version is not None:
            raise ValueError("a create has no expected version")


class Status(StrEnum):
    """What a write did, or why it did nothing."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    KEY_EXISTS = "key_exists"
    VERSION_MISMATCH = "version_mismatch"
    # The Idempotency-Key is held by a write still running, or was used for another request.
    IN_PROGRESS = "idempotency_in_progress"
    KEY_REUSED = "idempotency_key_reused"


# Outcomes an Idempotency-Key record keeps (the others are not the write's own result).
RECORDED = frozenset(Status) - {Status.IN_PROGRESS, Status.KEY_REUSED}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One write's result.

    `item` is the item written (CREATED, UPDATED); `current_version` the item's version when
    If-Match did not match (VERSION_MISMATCH). `replay_of` is set when this is the recorded
    outcome of an earlier request with the same Idempotency-Key: that request's id.
    """

    status: Status
    key: str
    item: ItemRecord | None = None
    current_version: int | None = None
    replay_of: str | None = None
