"""Liveness and readiness probes (exempt from auth and rate limits)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from app.api.schemas import Health, Readiness
from app.ratelimit.redis import RedisLimiter
from app.services import items as service
from app.store.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def read_health() -> JSONResponse:
    """200 while the process lives; never touches the database."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down."}},
)
async def read_readiness(request: Request) -> JSONResponse:
    """200 when the database answers (and Redis, if the limiter may not fall back), else 503."""
    checks: dict[str, str] = {}
    ready = True
    try:
        await service.database_ready()
        checks["database"] = "up"
    except DatabaseUnavailable:
        checks["database"] = "down"
        ready = False
    limiter = request.app.state.limiter
    if isinstance(limiter, RedisLimiter):
        redis_up = await limiter.ping()
        checks["redis"] = "up" if redis_up else "down"
        # With the open policy a Redis outage degrades limits but the service still serves.
        ready = ready and (redis_up or limiter.on_error == "open")
    body = {"status": "ok" if ready else "unavailable", **checks}
    return JSONResponse(body, status_code=200 if ready else 503)
