"""The framework ceiling: FastAPI under the production gunicorn config, answering a constant item.

From the project root, where gunicorn finds ./gunicorn.conf.py by itself:

    gunicorn loadtests.ceiling_app:app

`GET /v1/items/{key}` returns the same bytes for every key: KV_CEILING_ITEM when set (bench.py
passes a real item's body, so shape and size match), else an item shaped like the seeded ones.
No middleware, no database, no limiter: what kvkit costs on top of this is the app's own work.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.responses import Response

_DEFAULT_ITEM = (
    '{"key":"item.0000000","value":{"n":0,"text":"' + "x" * 64 + '"},"version":1,'
    '"created_at":"2026-01-01T00:00:00.000000Z","updated_at":"2026-01-01T00:00:00.000000Z"}'
)
ITEM = os.environ.get("KV_CEILING_ITEM", _DEFAULT_ITEM).encode()

app = FastAPI(title="kvkit ceiling", openapi_url=None)


@app.get("/healthz")
async def read_health() -> Response:
    """200 while the process lives."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.get("/v1/items/{key}")
async def read_item(key: str) -> Response:
    """The constant item, whatever the key."""
    return Response(ITEM, headers={"ETag": '"1"'}, media_type="application/json")
