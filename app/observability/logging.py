"""Process logging: one JSON object per line (or plain text), with request and trace ids."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
import time
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


class LineWriter:
    """The one thread that formats queued records and writes them, a burst per write call.

    A lone record is written at once. When records came faster than one at a time, the thread
    rests `linger` seconds after the write, so under load one write (and one wake-up of this
    thread) carries many lines instead of one each.
    """

    _STOP = logging.makeLogRecord({"msg": "stop"})

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord],
        formatter: logging.Formatter,
        linger: float = 0.005,
    ) -> None:
        self._records = records
        self._formatter = formatter
        self._linger = linger
        self._thread = threading.Thread(target=self._run, name="kvkit-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far, then end the thread."""
        if self._thread.is_alive():
            self._records.put(self._STOP)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            batch = [self._records.get()]
            while True:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            stopping = any(record is self._STOP for record in batch)
            lines = [self._line(record) for record in batch if record is not self._STOP]
            if lines:
                try:
                    sys.stderr.write("".join(lines))
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass  # stderr is gone (closed pipe, shutdown): nowhere left to report it
            if stopping:
                return
            if len(batch) > 1:  # a burst: let the next one gather
                time.sleep(self._linger)

    def _line(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record) + "\n"
        except Exception:  # a record that cannot be formatted must not stop the writer
            return f"unformattable log record from {record.name}\n"


# Records carry no thread or process names: no format uses them, and each costs a lookup.
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

_writer: LineWriter | None = None


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Settings) -> None:
    """Send every logger, uvicorn's included, through one stderr writer in the chosen format."""
    global _writer
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _ContextQueueHandler(records)
    handler.addFilter(ContextFilter())
    if _writer is not None:
        _writer.stop()
    _writer = LineWriter(records, formatter)
    _writer.start()
    atexit.register(_writer.stop)  # flush what is queued when the process exits
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
