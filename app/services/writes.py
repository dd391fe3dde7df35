"""Writes made in the same event-loop pass share one database job and one transaction.

A shared transaction that the database rolled back (a deadlock) or that failed for any reason
but the database being unreachable runs again as one transaction per write, so one write's
failure never becomes its neighbours': each still gets its own outcome. A lost connection or a
timeout fails them all alike, with nothing applied (app/store/writes.py).
"""

from __future__ import annotations

import asyncio
import logging

from app.batching import MAX_BATCH, LoopPassBatcher
from app.observability.metrics import IDEMPOTENCY_EVENTS, labelled
from app.store import access
from app.store.errors import DatabaseUnavailable, TransactionConflict
from app.store.records import Outcome, Status, Write

logger = logging.getLogger("kvkit.writes")

_EVENTS = {Status.IN_PROGRESS: "in_progress", Status.KEY_REUSED: "key_reused"}


class WriteBatcher(LoopPassBatcher[Write, Outcome]):
    """Answers the writes of one loop pass with one transaction (or, after a failure, each
    with its own)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        super().__init__(max_batch)

    async def _answer(self, calls: list[Write]) -> list[Outcome | Exception]:
        if len(calls) > 1:
            try:
                return list(await access.write(calls))
            except TransactionConflict:
                pass
            except DatabaseUnavailable:
                raise
            except Exception:
                logger.warning(
                    "a shared write transaction failed; its writes run one by one", exc_info=True
                )
        return list(await asyncio.gather(*(_alone(write) for write in calls)))


async def _alone(write: Write) -> Outcome | Exception:
    """The write in a transaction of its own; its error, if any, is its answer."""
    try:
        [outcome] = await access.write([write])
    except Exception as exc:
        return exc
    return outcome


_writes = WriteBatcher()


async def perform_write(write: Write) -> Outcome:
    """The write's outcome, committed (or, for a replay or a conflict, not written again)."""
    outcome = await _writes.submit(write)
    event = "replayed" if outcome.replay_of is not None else _EVENTS.get(outcome.status)
    if event is not None:
        labelled(IDEMPOTENCY_EVENTS, event).inc()
    return outcome
