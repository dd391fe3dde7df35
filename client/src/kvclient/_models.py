"""Immutable views of the JSON documents the kvkit service returns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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


class Headers(Mapping[str, str]):
    """Response headers looked up case-insensitively (RFC 9110 field names), read-only."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            previous = self._items.get(name.lower())
            # Repeated fields combine into one comma-separated value (RFC 9110 section 5.3).
            joined = value if previous is None else f"{previous[1]}, {value}"
            self._items[name.lower()] = (name, joined)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class Response:
    """One complete HTTP response as either client read it: what errors carry as `.response`."""

    status: int
    headers: Headers
    body: bytes
    reason: str = ""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8, undecodable bytes replaced."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.body)
