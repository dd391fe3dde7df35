"""Model fields whose database behaviour must match on every backend."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from app.store import dialects


class BinaryCharField(models.CharField):
    """A CharField that compares and sorts byte-wise on PostgreSQL, MariaDB/MySQL and SQLite."""

    def db_parameters(self, connection: BaseDatabaseWrapper) -> dict[str, Any]:
        params = super().db_parameters(connection)
        params["collation"] = dialects.for_vendor(connection.vendor).binary_collation
        return params
