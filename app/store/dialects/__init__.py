"""What differs between PostgreSQL, MariaDB/MySQL and SQLite, one module per backend.

Everything else in the store is written once, against the ORM and these classes.
"""

from __future__ import annotations

from django.db import connection

from app.store.dialects.base import Bounds, Dialect, ErrorKind
from app.store.dialects.mysql import MySQL
from app.store.dialects.postgresql import PostgreSQL
from app.store.dialects.sqlite import SQLite

__all__ = ["Bounds", "Dialect", "ErrorKind", "current", "for_vendor"]

_BY_VENDOR: dict[str, Dialect] = {d.vendor: d for d in (PostgreSQL(), MySQL(), SQLite())}


def for_vendor(vendor: str) -> Dialect:
    """The dialect of a Django backend vendor ("postgresql", "mysql", "sqlite")."""
    try:
        return _BY_VENDOR[vendor]
    except KeyError:
        raise ValueError(f"unsupported database backend: {vendor}") from None


def current() -> Dialect:
    """The dialect of this thread's default database connection."""
    return for_vendor(connection.vendor)
