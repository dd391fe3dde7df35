"""Writes of one event-loop pass through the services, each sent inside a span of its own, with
every finished span written as a JSON line to a file.

Usage: python shared_writes.py SPANS_FILE KEY_PREFIX
Prints one JSON line: each write's trace id, and how many writes shared a transaction.
"""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import REGISTRY
from span_server import JsonLinesExporter  # type: ignore[import-not-found]

from app.observability import tracing
from app.store.setup import setup_django

WRITES = 8


async def main(prefix: str) -> dict[str, object]:
    from app.services import items as service
    from app.store.db import configure_db_threads

    configure_db_threads(4, timeout=5.0)
    await asyncio.gather(*(service.create_item(f"{prefix}{n}", "0", None) for n in range(WRITES)))
    tracer = trace.get_tracer("shared-writes")
    shared = REGISTRY.get_sample_value("kvkit_db_writes_total", {"path": "shared"}) or 0.0

    async def write(n: int) -> str:
        with tracer.start_as_current_span(f"request {n}") as span:
            if n % 2 == 0:
                await service.update_item(f"{prefix}{n}", "1", None, None)
            else:
                await service.delete_item(f"{prefix}{n}", None, None)
            return format(span.get_span_context().trace_id, "032x")

    traces = await asyncio.gather(*(write(n) for n in range(WRITES)))  # one loop pass
    after = REGISTRY.get_sample_value("kvkit_db_writes_total", {"path": "shared"}) or 0.0
    return {"traces": traces, "shared": after - shared}


if __name__ == "__main__":
    spans_file, key_prefix = sys.argv[1], sys.argv[2]
    tracing.init_worker(span_processor=SimpleSpanProcessor(JsonLinesExporter(spans_file)))
    setup_django()
    print(json.dumps(asyncio.run(main(key_prefix))))
