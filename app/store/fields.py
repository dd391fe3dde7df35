"""Model fields whose database behaviour must match on every backend."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

# Byte-wise collations: "a" and "A" are different keys, ordering is by code point everywhere.
BINARY_COLLATIONS = {"postgresql": "C", "mysql": "utf8mb4_bin", "sqlite": "BINARY"}


class BinaryCharField(models.CharField):
    """A CharField that compares and sorts byte-wise on PostgreSQL, MariaDB/MySQL and SQLite."""

    def db_parameters(self, connection: BaseDatabaseWrapper) -> dict[str, Any]:
        params = super().db_parameters(connection)
        params["collation"] = BINARY_COLLATIONS.get(connection.vendor)
        return params
