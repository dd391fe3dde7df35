"""Export what the maintenance tasks recorded: they run as their own short-lived processes
(a CronJob, compose's purge service), which nothing scrapes, so the service reports for them."""

from __future__ import annotations

import asyncio
import logging

from app.observability.metrics import PURGE_LAST_SUCCESS
from app.store import access

logger = logging.getLogger("kvkit.maintenance")

# A purge runs hourly; a minute's delay in noticing one is nothing beside the alert's hours.
REFRESH_SECONDS = 60.0


async def export_last_purge(refresh: float = REFRESH_SECONDS) -> None:
    """Copy when the last purge succeeded into its gauge, now and every `refresh` seconds."""
    while True:
        try:
            when = await access.last_purge()
        except Exception as exc:  # counted by the store's metrics; tried again next time
            logger.debug("last purge time not read: %s", exc)
        else:
            if when is not None:
                PURGE_LAST_SUCCESS.set(when.timestamp())
        await asyncio.sleep(refresh)
