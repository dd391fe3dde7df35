"""The app factory: `app.main:app` is what uvicorn and gunicorn serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route

import app as package
from app.config import Settings, get_settings
from app.observability import tracing
from app.observability.logging import configure_logging
from app.runtime import tune_garbage_collector
from app.store.setup import setup_django


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; Django is set up here, so importing this module stays cheap."""
    settings = settings or get_settings()
    configure_logging(settings)
    tracing.init_worker()  # a no-op when gunicorn's post_fork has run it already
    setup_django()

    from app.api import health, items, metrics
    from app.api.docs import install_docs
    from app.api.guard import GuardMiddleware
    from app.api.methods import complete_methods
    from app.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
    from app.api.problems import install_problem_handlers
    from app.observability import exporter
    from app.observability.metrics import initialise_counters
    from app.observability.middleware import ObservabilityMiddleware
    from app.ratelimit.factory import build_limiter
    from app.ratelimit.redis import RedisLimiter
    from app.security.identity import ApiKeys
    from app.services.maintenance import export_last_purge
    from app.store.db import configure_db_threads, shutdown_db_threads

    limiter = build_limiter(settings)
    keys = ApiKeys([key.get_secret_value() for key in settings.api_keys])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_db_threads(
            settings.db_threads,
            settings.db_timeout,
            settings.db_idle_timeout,
            settings.db_queue_size,
        )
        metrics_server = exporter.serve_in_process(settings.metrics_port)
        maintenance = asyncio.create_task(export_last_purge(), name="kvkit-maintenance")
        yield
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if isinstance(limiter, RedisLimiter):
            await limiter.close()
        shutdown_db_threads()

    api = FastAPI(
        title="kvkit",
        version=package.__version__,
        description="A key-value HTTP service with safe retries and shared rate limits.",
        lifespan=lifespan,
        # /docs comes from app/api/docs.py with assets of its own (FastAPI's pages load a CDN).
        openapi_url="/openapi.json" if settings.docs else None,
        docs_url=None,
        redoc_url=None,
        # Traces come from the OpenTelemetry instrumentation (observability/tracing.py) and
        # metrics from prometheus-client; FastAPI's own telemetry would check its providers on
        # every request to find nothing to do.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.state.limiter = limiter
    api.state.readiness = health.ReadinessCache()
    # No trailing-slash redirects: Starlette builds them from the Host header, which the client
    # chooses. A path with a stray slash is simply not found.
    api.router.redirect_slashes = False
    install_problem_handlers(api)
    if settings.docs:
        install_docs(api)
    complete_methods(items.router)
    # With KV_METRICS_PORT set, /metrics is served there only (app/observability/exporter.py).
    routers = [health.router, items.router]
    if settings.metrics_port is None:
        routers.append(metrics.router)
    for router in routers:
        api.include_router(router)
    # Each add_middleware wraps the previous ones: the last added runs first.
    api.add_middleware(
        GuardMiddleware, keys=keys, trusted=settings.trusted_proxies, limiter=limiter
    )
    api.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    routes = [route for router in routers for route in router.routes]
    initialise_counters(
        (method, route.path)
        for route in routes
        if isinstance(route, Route)
        for method in route.methods or ()
    )
    api.add_middleware(ObservabilityMiddleware, routes=routes)
    api.add_middleware(RequestIdMiddleware)
    tracing.instrument_app(api)
    tune_garbage_collector()  # last: everything built so far lives as long as the process
    return api


app = create_app()
