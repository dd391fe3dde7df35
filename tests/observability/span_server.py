"""Serve kvkit under uvicorn with every finished span written as a JSON line to a file.

Usage: python span_server.py SPANS_FILE PORT
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from app.observability import tracing


class JsonLinesExporter(SpanExporter):
    """Append each span as one JSON line, so the test process can read them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock, open(self.path, "a") as out:
            for span in spans:
                out.write(span.to_json(indent=None) + "\n")
        return SpanExportResult.SUCCESS


if __name__ == "__main__":
    spans_file, port = sys.argv[1], int(sys.argv[2])
    tracing.init_worker(span_processor=SimpleSpanProcessor(JsonLinesExporter(spans_file)))
    uvicorn.run("app.main:app", host="127.0.0.1", port=port, access_log=False, log_level="warning")
