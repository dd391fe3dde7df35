"""GET /metrics for Prometheus (exempt from auth and rate limits, like the probes)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.observability.exposition import exposition

router = APIRouter(tags=["observability"])


@router.get("/metrics", include_in_schema=False)
def read_metrics() -> Response:
    """The text exposition; a route, because a mount answers /metrics with a 307."""
    return Response(exposition()(), media_type=CONTENT_TYPE_LATEST)
