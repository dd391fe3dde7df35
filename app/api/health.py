"""Liveness and readiness probes (exempt from auth and rate limits)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from app.services import items as service
from app.store.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_health() -> JSONResponse:
    """200 while the process lives; never touches the database."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", responses={503: {"description": "A dependency is down."}})
async def read_readiness() -> JSONResponse:
    """200 when the database answers, 503 otherwise."""
    try:
        await service.database_ready()
    except DatabaseUnavailable:
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up"})
