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


class IdempotencyRecord(models.Model):
    """The stored outcome of a request sent with an Idempotency-Key, written in the same
    transaction as the item write it describes."""

    client = models.CharField(max_length=64)
    key = BinaryCharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    body = models.BinaryField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        app_label = "kvstore"
        db_table = "kv_idempotency"
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="kv_idempotency_client_key")
        ]
