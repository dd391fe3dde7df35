"""Maintenance the service needs but does not run itself: purging expired Idempotency-Key
records, in batches, and recording when that last succeeded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from app.store.models import IdempotencyRecord, MaintenanceRun

PURGE_TASK = "purge-idempotency"


@dataclass(frozen=True, slots=True)
class PurgeResult:
    deleted: int
    batches: int


def purge_expired_idempotency(batch_size: int) -> PurgeResult:
    """Delete records expired by now, `batch_size` rows per transaction, so no batch holds its
    row locks (which a replay of the same key would wait on) for long; then record success."""
    now = timezone.now()
    expired = IdempotencyRecord.objects.filter(expires_at__lte=now)
    deleted = batches = 0
    while True:
        with transaction.atomic():
            ids = list(expired.order_by("expires_at").values_list("pk", flat=True)[:batch_size])
            if ids:
                count, _ = expired.filter(pk__in=ids).delete()
                deleted += count
                batches += 1
        if len(ids) < batch_size:
            break
    MaintenanceRun.objects.update_or_create(
        task=PURGE_TASK, defaults={"succeeded_at": timezone.now(), "deleted": deleted}
    )
    return PurgeResult(deleted=deleted, batches=batches)


def last_success(task: str) -> datetime | None:
    """When `task` last succeeded (the schema's creation counts), or None before migration."""
    return MaintenanceRun.objects.filter(task=task).values_list("succeeded_at", flat=True).first()
