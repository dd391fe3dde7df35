"""The app factory: `app.main:app` is what uvicorn and gunicorn serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import app as package
from app.config import Settings, get_settings
from app.store.setup import setup_django


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; Django is set up here, so importing this module stays cheap."""
    settings = settings or get_settings()
    setup_django()

    from app.api import health, items
    from app.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
    from app.api.problems import install_problem_handlers
    from app.store.db import configure_db_threads, shutdown_db_threads

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_db_threads(settings.db_threads, settings.db_timeout)
        yield
        shutdown_db_threads()

    api = FastAPI(
        title="kvkit",
        version=package.__version__,
        description="A key-value HTTP service with safe retries and shared rate limits.",
        lifespan=lifespan,
    )
    install_problem_handlers(api)
    api.include_router(health.router)
    api.include_router(items.router)
    # Added last = outermost: every response, even a refused body, gets an X-Request-ID.
    api.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    api.add_middleware(RequestIdMiddleware)
    return api


app = create_app()
