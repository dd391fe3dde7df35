"""Rate-limit checks made in the same event-loop pass travel to Redis in one pipeline.

Sending each EVALSHA on its own costs a round trip, two socket calls and redis-py's per-command
machinery every time; one pipeline (no MULTI: each script is atomic on its own) carries them all.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.batching import LoopPassBatcher
from app.observability.metrics import observe_redis


class ScriptBatcher(LoopPassBatcher[tuple[Any, ...], Any]):
    """Runs one Lua script for many callers, a pipeline per event-loop pass."""

    def __init__(self, redis: Redis, script: str, sha: str) -> None:
        super().__init__()
        self.redis = redis
        self.script = script
        self.sha = sha

    async def run(self, key: str, *args: str | int) -> Any:
        """The script's reply for KEYS[1]=key, ARGV=args; raises what Redis or the socket raised."""
        return await self.submit((key, *args))

    async def _answer(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        replies = await self._pipeline(calls)
        lost = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:  # Redis restarted or was flushed: load the script once, rerun those calls
            await self.redis.script_load(self.script)
            rerun = await self._pipeline([calls[n] for n in lost])
            for n, reply in zip(lost, rerun, strict=True):
                replies[n] = reply
        return replies

    async def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """One round trip; timed and counted once, as `evalsha`, however many calls it carries."""
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
