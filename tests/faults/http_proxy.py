"""An HTTP/1.1-aware proxy that loses requests and responses on purpose.

For each request it reads from a client it draws (from a seeded random source) one of:

- `reset_before`: reset the client connection without forwarding the request (the server never
  sees it);
- `reset_during`: forward the request, then at once reset the client connection and close the
  upstream one: the server is still working on it when the client retries (a retry that meets
  its own first attempt in progress);
- `reset_after`: forward the request, read the whole upstream response, then reset the client
  connection instead of relaying it: the server did the work but the client never learns the
  outcome (the "lost response" that idempotency keys exist for);
- nothing: relay the response.

A connection the upstream drops (a killed worker, a keep-alive race) is reset towards the client
too and counted as `upstream_lost`. Client connections are kept alive like a real proxy would.
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass
from typing import BinaryIO

_MAX_LINE = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN


class ProtocolError(Exception):
    """The peer sent something that is not the HTTP/1.1 this proxy understands."""


@dataclass(frozen=True, slots=True)
class Message:
    raw: bytes
    method: str  # requests only
    status: int  # responses only
    close: bool  # the sender will close the connection after this message


def read_message(stream: BinaryIO, *, request_method: str | None = None) -> Message | None:
    """Read one request (request_method None) or the response to `request_method`.

    Returns None on a clean end of stream before the first byte.
    """
    start = stream.readline(_MAX_LINE)
    if not start:
        return None
    if not start.endswith(b"\r\n"):
        raise ProtocolError(f"truncated start line {start[:80]!r}")
    parts = start.decode("latin-1").split()
    raw = [start]
    headers: dict[str, str] = {}
    while True:
        line = stream.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection ended inside the headers")
        raw.append(line)
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    version = parts[0] if request_method is not None else parts[2] if len(parts) > 2 else ""
    connection = headers.get("connection", "").lower()
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if request_method is None:
        method, status = parts[0], 0
        has_body = True
    else:
        method, status = "", int(parts[1])
        has_body = request_method != "HEAD" and status >= 200 and status not in (204, 304)
    if has_body:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw.append(_read_chunked(stream))
        elif "content-length" in headers:
            raw.append(_read_exactly(stream, int(headers["content-length"])))
        elif request_method is not None:  # a response without length ends with the connection
            raw.append(stream.read())
            close = True
    return Message(b"".join(raw), method, status, close)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ProtocolError(f"connection ended {size - len(data)} bytes before the body's end")
    return data


def _read_chunked(stream: BinaryIO) -> bytes:
    raw = []
    while True:
        line = stream.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection ended inside a chunk header")
        raw.append(line)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        raw.append(_read_exactly(stream, size + 2))
    while True:  # trailers, then the empty line
        line = stream.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ProtocolError("connection ended inside the trailers")
        raw.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(raw)


class HttpFaultProxy:
    """Listens on 127.0.0.1 and relays HTTP/1.1 to `target`, losing messages at the given rates.

    `enabled` turns fault injection on and off; `counts` tells what happened (requests, relayed,
    reset_before, reset_during, reset_after, upstream_lost); `errors` collects anything
    unexpected.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        reset_before: float,
        reset_after: float,
        reset_during: float = 0.0,
        seed: int,
        upstream_timeout: float = 30,
    ) -> None:
        self.target = target
        self.rates = {
            "reset_before": reset_before,
            "reset_during": reset_during,
            "reset_after": reset_after,
        }
        self.upstream_timeout = upstream_timeout
        self.enabled = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._listener.settimeout(0.2)  # so the accept loop notices close()
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting and end every open connection."""
        self._closed.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:  # wake the relay threads; each closes its own sockets
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HttpFaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _draw(self) -> str | None:
        with self._lock:
            if not self.enabled:
                return None
            roll = self._rng.random()
        for fault, rate in self.rates.items():
            if roll < rate:
                return fault
            roll -= rate
        return None

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        upstream_reader: BinaryIO | None = None
        client.settimeout(120)  # an idle keep-alive client; the test ends long before
        client_reader = client.makefile("rb")
        reset_client = True
        try:
            while not self._closed.is_set():
                request = read_message(client_reader)
                if request is None:  # the client closed its keep-alive connection
                    reset_client = False
                    return
                self._count("requests")
                fault = self._draw()
                if fault == "reset_before":
                    self._count(fault)
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=self.upstream_timeout)
                    self._track(upstream)
                    upstream_reader = upstream.makefile("rb")
                assert upstream_reader is not None
                try:
                    upstream.sendall(request.raw)
                    if fault == "reset_during":
                        self._count(fault)
                        return
                    response = read_message(upstream_reader, request_method=request.method)
                except (OSError, ProtocolError):
                    response = None
                if response is None:
                    self._count("upstream_lost")
                    return
                if fault == "reset_after":
                    self._count(fault)
                    return
                client.sendall(response.raw)
                self._count("relayed")
                if response.close or request.close:
                    reset_client = False
                    return
        except (OSError, ProtocolError):
            return  # the client went away or spoke garbage: drop it
        except Exception as exc:  # anything else is a bug of the proxy: report it
            self.errors.append(repr(exc))
        finally:
            client_reader.close()
            if reset_client:
                _reset(client)
            else:
                client.close()
            self._untrack(client)
            if upstream is not None:
                if upstream_reader is not None:
                    upstream_reader.close()
                upstream.close()
                self._untrack(upstream)


def _reset(sock: socket.socket) -> None:
    """Close with RST: the peer sees "connection reset", as when a proxy or a host dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.close()
