"""The tables kvkit owns."""

from __future__ import annotations

from django.db import models

from app.store.fields import BinaryCharField

KEY_MAX_LENGTH = 255


class Item(models.Model):
    """One stored value; `version` counts writes and backs ETag/If-Match."""

    key = BinaryCharField(primary_key=True, max_length=KEY_MAX_LENGTH)
    value = models.JSONField()
    version = models.BigIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        app_label = "kvstore"
        db_table = "kv_item"
