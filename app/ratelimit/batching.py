"""Rate-limit checks made in the same event-loop pass travel to Redis in one pipeline.

Under load a worker has many requests waiting at the limiter at once; sending each EVALSHA on
its own costs a round trip, two socket calls and redis-py's per-command machinery every time.
Here the first check of a pass schedules a flush for the next pass, the checks that arrive
meanwhile join it, and one pipeline (no MULTI: each script is atomic on its own) carries them
all. A lone request waits one loop pass, nothing more. Each check still gets its own answer or
its own error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.observability.metrics import observe_redis


class ScriptBatcher:
    """Runs one Lua script for many callers, a pipeline per event-loop pass."""

    def __init__(self, redis: Redis, script: str, sha: str) -> None:
        self.redis = redis
        self.script = script
        self.sha = sha
        self.pipelines_sent = 0  # for tests and debugging: how many round trips were made
        self._queued: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()  # strong references until they finish

    async def run(self, key: str, *args: str | int) -> Any:
        """The script's reply for KEYS[1]=key, ARGV=args; raises what Redis or the socket raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush_queued)
        self._queued.append(((key, *args), future))
        return await future

    def _flush_queued(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[tuple[Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._pipeline([call for call, _ in batch])
            lost = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:  # Redis restarted or was flushed: load the script once, rerun those calls
                await self.redis.script_load(self.script)
                rerun = await self._pipeline([batch[n][0] for n in lost])
                for n, reply in zip(lost, rerun, strict=True):
                    replies[n] = reply
        except asyncio.CancelledError:  # shutting down: nobody will get an answer
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole round trip failed: every caller hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller gave up (disconnect)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, calls: list[Sequence[Any]]) -> list[Any]:
        """One round trip; timed and counted once, as `evalsha`, however many calls it carries."""
        self.pipelines_sent += 1
        with observe_redis("evalsha"):
            if len(calls) == 1:  # a pipeline object costs more than the one command it carries
                try:
                    return [await self.redis.evalsha(self.sha, 1, *calls[0])]
                except NoScriptError as exc:
                    return [exc]
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                pipe.evalsha(self.sha, 1, *call)
            return list(await pipe.execute(raise_on_error=False))
