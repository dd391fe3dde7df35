"""The database threads: a caller answered is never acted for, and the queue has a bound."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from app.store.db import DatabaseThreads, claim_commit
from app.store.errors import CommitUnconfirmed, DatabaseBusy, DatabaseUnavailable
from tests.conftest import Databases, use_database

T = TypeVar("T")
# The shortest statement timeout the settings allow is far above this; a caller waits
# TIMEOUT + 1 s (app/store/db.py) before it is answered.
TIMEOUT = 0.2


@pytest.fixture
def threads(databases: Databases) -> Iterator[Callable[..., DatabaseThreads]]:
    """DatabaseThreads of the test's own (each job does Django's housekeeping: SQLite here)."""
    use_database(databases.url("sqlite"))
    made: list[DatabaseThreads] = []

    def make(count: int = 1, queue_size: int = 128) -> DatabaseThreads:
        made.append(DatabaseThreads(count, TIMEOUT, idle_timeout=60, queue_size=queue_size))
        return made[-1]

    yield make
    for pool in made:
        pool.shutdown()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def test_a_job_still_queued_at_its_deadline_never_runs(
    threads: Callable[..., DatabaseThreads],
) -> None:
    """Both callers are answered 503; the queued job is skipped, and the thread serves again."""
    pool = threads(1)
    release, ran = threading.Event(), []

    async def scenario() -> int:
        stuck = asyncio.ensure_future(pool.run(release.wait))  # holds the only thread
        queued = asyncio.ensure_future(pool.run(lambda: ran.append("queued")))
        outcomes = await asyncio.gather(stuck, queued, return_exceptions=True)
        assert all(isinstance(o, DatabaseUnavailable) for o in outcomes), outcomes
        release.set()
        return await pool.run(lambda: 7)  # queued after the abandoned one: runs after its turn

    assert run(scenario()) == 7
    assert ran == []


def test_a_job_abandoned_while_running_may_not_commit(
    threads: Callable[..., DatabaseThreads],
) -> None:
    """A job that reaches its COMMIT after its caller was answered is refused the COMMIT."""
    pool = threads(1)
    release, outcome = threading.Event(), []

    def write() -> str:
        release.wait()  # the statements take longer than the caller waits
        try:
            claim_commit()
        except Exception as exc:
            outcome.append(type(exc).__name__)
            raise
        outcome.append("committed")
        return "done"

    async def scenario() -> None:
        with pytest.raises(DatabaseUnavailable):
            await pool.run(write)
        release.set()
        await pool.run(lambda: None)  # one thread: the write has finished before this runs

    run(scenario())
    assert outcome == ["JobAbandoned"]


def test_a_commit_under_way_is_waited_for(threads: Callable[..., DatabaseThreads]) -> None:
    """Once a job has claimed its COMMIT, its caller gets the real answer, though it comes late."""
    pool = threads(1)
    committed = threading.Event()

    def write() -> str:
        claim_commit()
        committed.wait()  # a COMMIT that outlasts the caller's first deadline
        return "committed"

    async def scenario() -> str:
        waiting = asyncio.ensure_future(pool.run(write))
        # Past the first deadline and its sweep, well before the second.
        await asyncio.sleep(TIMEOUT + 1.0 + 0.4)
        assert not waiting.done()
        committed.set()
        return await waiting

    assert run(scenario()) == "committed"


def test_a_commit_never_confirmed_says_the_outcome_is_unknown(
    threads: Callable[..., DatabaseThreads],
) -> None:
    """A COMMIT the database never answers ends the wait with CommitUnconfirmed, not a hang."""
    pool = threads(1)
    stalled = threading.Event()

    def write() -> None:
        claim_commit()
        stalled.wait()

    try:
        with pytest.raises(CommitUnconfirmed):
            run(pool.run(write))
    finally:
        stalled.set()


def test_a_full_queue_refuses_at_once(threads: Callable[..., DatabaseThreads]) -> None:
    """Past queue_size waiting jobs a caller is refused while the others still wait."""
    pool = threads(1, queue_size=2)
    release = threading.Event()

    async def scenario() -> list[Any]:
        stuck = asyncio.ensure_future(pool.run(release.wait))
        await asyncio.sleep(0.05)  # the thread took it: the queue is empty
        queued = [asyncio.ensure_future(pool.run(lambda n=n: n)) for n in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(DatabaseBusy):
            await pool.run(lambda: "refused")
        assert not any(job.done() for job in queued)  # refused without waiting for them
        release.set()
        return await asyncio.gather(stuck, *queued)

    assert run(scenario()) == [True, 0, 1]


def test_a_caller_that_goes_away_takes_its_queued_job_with_it(
    threads: Callable[..., DatabaseThreads],
) -> None:
    """A cancelled caller (a client that disconnected) leaves nothing to run in the queue."""
    pool = threads(1)
    release, ran = threading.Event(), []

    async def scenario() -> None:
        stuck = asyncio.ensure_future(pool.run(release.wait))
        queued = asyncio.ensure_future(pool.run(lambda: ran.append("queued")))
        await asyncio.sleep(0.05)
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        release.set()
        await stuck
        await pool.run(lambda: None)

    run(scenario())
    assert ran == []
