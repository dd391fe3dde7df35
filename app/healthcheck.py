"""The container's own health probe: GET /healthz on the address gunicorn is bound to."""

from __future__ import annotations

import http.client
import socket

# Maps a wildcard bind to loopback, to connect to; nothing binds here.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104  # nosec B104


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, for `GUNICORN_BIND=unix:/path`."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def connection_for(bind: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the first address of gunicorn's `bind` (`host:port`, `[v6]:port`,
    `unix:/path`, or a bare port); a wildcard host is reached on loopback."""
    first = bind.split(",")[0].strip()
    if first.startswith("unix:"):
        return UnixHTTPConnection(first[len("unix:") :], timeout)
    if first.startswith("["):
        host, _, port = first[1:].partition("]:")
    elif first.isdigit():
        host, port = "", first
    else:
        host, _, port = first.rpartition(":")
    host = _ANY_ADDRESS.get(host, host)
    return http.client.HTTPConnection(host, int(port or 8000), timeout=timeout)


def healthy(bind: str, path: str = "/healthz", timeout: float = 2.0) -> bool:
    """True when the server on `bind` answers `path` with 200."""
    connection = connection_for(bind, timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()
