"""The tables kvkit owns."""

from __future__ import annotations

from django.db import models

from app.store.fields import BinaryCharField

KEY_MAX_LENGTH = 255


class Item(models.Model):
    """One stored value; `version` counts writes and backs ETag/If-Match."""

    key = BinaryCharField(primary_key=True, max_length=KEY_MAX_LENGTH)
    # The value's JSON text as the API encoded it: returned as stored, never parsed again, so no
    # backend's JSON type can change a number (jsonb has no -0.0 and prints 1e300 in full).
    value = models.TextField()
    version = models.BigIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        app_label = "kvstore"
        db_table = "kv_item"


class IdempotencyRecord(models.Model):
    """The outcome of a write sent with an Idempotency-Key, committed in the same transaction as
    the write; a replay is rendered from it exactly as the first answer was."""

    client = models.CharField(max_length=64)
    key = BinaryCharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    outcome = models.CharField(max_length=32)  # an app.store.writes.Status
    item_key = BinaryCharField(max_length=KEY_MAX_LENGTH)
    # The item's version after the write, or its current version when If-Match did not match.
    version = models.BigIntegerField(null=True)
    value = models.TextField(null=True)  # the JSON text written, for a create or an update
    item_created_at = models.DateTimeField(null=True)
    item_updated_at = models.DateTimeField(null=True)
    request_id = models.CharField(max_length=128)  # the first request's, as its answer carried it
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        app_label = "kvstore"
        db_table = "kv_idempotency"
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="kv_idempotency_client_key")
        ]


class MaintenanceRun(models.Model):
    """When a maintenance task (a purge) last succeeded, for the service to export: the task
    runs in its own short-lived process, which nothing scrapes."""

    task = models.CharField(primary_key=True, max_length=64)
    succeeded_at = models.DateTimeField()
    deleted = models.BigIntegerField(default=0)  # rows the last successful run removed

    class Meta:
        app_label = "kvstore"
        db_table = "kv_maintenance_run"
