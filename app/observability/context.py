"""Per-request context shared by logs, problem bodies and traces."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("kvkit_request_id", default="-")
