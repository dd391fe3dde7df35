"""Immutable views of the JSON documents the kvkit service returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """One stored value with the version that guards concurrent updates."""

    key: str
    value: Any
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        """Build an item from the service's JSON representation."""
        return cls(
            key=str(data["key"]),
            value=data["value"],
            version=int(data["version"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The service's JSON representation, timestamps as RFC 3339 strings."""
        return {
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; pass `next_cursor` back to get the next, None on the last page."""

    items: tuple[Item, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        """Build a page from the service's listing JSON."""
        cursor = data.get("next_cursor")
        return cls(
            items=tuple(Item.from_json(item) for item in data["items"]),
            next_cursor=str(cursor) if cursor is not None else None,
        )
