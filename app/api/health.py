"""Liveness and readiness probes (exempt from auth and rate limits)."""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from app.api.guard import Limiter
from app.api.schemas import Health, Readiness
from app.ratelimit.redis import RedisLimiter
from app.server.drain import draining
from app.services import items as service
from app.store.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def read_health() -> JSONResponse:
    """200 while the process lives; never touches the database."""
    return JSONResponse({"status": "ok"})


# A probe answer is reused this long: probes (and anyone else) cost the database at most one
# query per worker and interval, however often they ask.
READINESS_TTL_SECONDS = 1.0


class ReadinessCache:
    """The last readiness answer of this worker, recomputed at most once per TTL; callers that
    arrive while it is being computed wait for that answer."""

    def __init__(self, ttl: float = READINESS_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._answer: tuple[dict[str, str], int] = ({}, 503)
        self._at = -math.inf

    async def answer(self, limiter: Limiter) -> tuple[dict[str, str], int]:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._answer = await _check(limiter)
                self._at = time.monotonic()
            return self._answer


async def _check(limiter: Limiter) -> tuple[dict[str, str], int]:
    checks: dict[str, str] = {}
    ready = True
    try:
        await service.database_ready()
        checks["database"] = "up"
    except DatabaseUnavailable:
        checks["database"] = "down"
        ready = False
    if isinstance(limiter, RedisLimiter):
        redis_up = await limiter.ping()
        checks["redis"] = "up" if redis_up else "down"
        # With the open policy a Redis outage degrades limits but the service still serves.
        ready = ready and (redis_up or limiter.on_error == "open")
    return {"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down."}},
)
async def read_readiness(request: Request) -> JSONResponse:
    """200 when the database answers (and Redis, if the limiter may not fall back), else 503;
    the answer is at most a second old."""
    state = request.app.state
    body, status = await state.readiness.answer(state.limiter)
    if draining():  # stopping: out of rotation before the listener closes (app/server/drain.py)
        body, status = {**body, "status": "unavailable", "shutdown": "draining"}, 503
    return JSONResponse(body, status_code=status)
