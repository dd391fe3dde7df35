"""/metrics on a port of its own (KV_METRICS_PORT), away from the API port and its clients.

Under gunicorn the master serves it (gunicorn.conf.py, `when_ready`): it reads every worker's
files, so one scrape counts all of them, and a scrape never competes with requests for a
worker's event loop. A single process not run by gunicorn (uvicorn) serves it from a thread of
its own (the app's lifespan). Either way the answer is the cached exposition
(app/observability/exposition.py): at most one collection per KV_METRICS_MIN_INTERVAL.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from app.observability.exposition import exposition

logger = logging.getLogger("kvkit.metrics")

# The address metrics listen on: every interface, as the API does; the NetworkPolicy and the
# Services decide who may reach the port (only Prometheus).
METRICS_HOST = "0.0.0.0"  # noqa: S104  # nosec B104

_server: ThreadingHTTPServer | None = None
_left_to_master = False


class _MetricsHandler(BaseHTTPRequestHandler):
    """GET /metrics answers the exposition; anything else is 404."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = exposition()()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged: one line every 15 s per Prometheus says nothing."""


def serve(port: int, host: str = METRICS_HOST) -> ThreadingHTTPServer:
    """Start serving /metrics on `port` from a daemon thread; the server, to stop it."""
    global _server
    server = ThreadingHTTPServer((host, port), _MetricsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kvkit-metrics", daemon=True).start()
    _server = server
    logger.info("metrics on port %d", port)
    return server


def leave_to_master() -> None:
    """In a gunicorn worker: the master serves /metrics, so this process will not, and it lets
    go of the master's listening socket it inherited through the fork."""
    global _server, _left_to_master
    _left_to_master = True
    if _server is not None:
        _server.socket.close()  # only this process's copy: the master keeps serving
        _server = None


def serve_in_process(port: int | None) -> ThreadingHTTPServer | None:
    """Serve /metrics from this process, unless no port is set or a gunicorn master serves it."""
    if port is None or _left_to_master:
        return None
    return serve(port)
