"""What the data layer reports; the HTTP layer decides how each one looks to a client."""

from __future__ import annotations


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class ItemNotFound(StoreError):
    """No item has that key."""


class KeyExists(StoreError):
    """An item with that key exists already."""


class VersionMismatch(StoreError):
    """The item exists but its version is not the one the caller expected."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"current version is {current_version}")
        self.current_version = current_version


class DatabaseUnavailable(StoreError):
    """The database did not answer in time or refused the connection; safe to retry later."""


class IdempotencyInProgress(StoreError):
    """Another request with this Idempotency-Key has not finished yet."""


class IdempotencyKeyReused(StoreError):
    """The Idempotency-Key was used before for a different request."""
