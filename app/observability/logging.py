"""Process logging: one JSON object per line (or plain text), with request and trace ids."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from app.config import Settings
from app.observability.context import request_id_var

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_CONTEXT_FIELDS = ("request_id", "trace_id", "span_id")


class ContextFilter(logging.Filter):
    """Stamp each record with the request id and the current trace and span ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the ids, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class _ContextQueueHandler(logging.handlers.QueueHandler):
    """Hands records to a writer thread, so the event loop never waits on a log write.

    The request's ids are stamped here, in the thread that logs; formatting and the write happen
    in the listener's thread.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_listener: logging.handlers.QueueListener | None = None


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Settings) -> None:
    """Send every logger, uvicorn's included, through one stderr writer in the chosen format."""
    global _listener
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(
        JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _ContextQueueHandler(records)
    handler.addFilter(ContextFilter())
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_listener.stop)  # flush what is queued when the process exits
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn installs handlers of its own before it imports the app; kvkit.access replaces its
    # access log, and its error log goes through the handler above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
