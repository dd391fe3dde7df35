"""Exact bytes on a socket: hostile requests that httpx would refuse or normalise.

Every request made through `Wire` is followed by a check that the service survived it: the
process lives, /healthz answers and the log gained no traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import Server

PROBLEM_JSON = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}
# Long enough for a busy two-core machine; a hang is far longer.
TIMEOUT = 15.0

Header = tuple[str | bytes, str | bytes]


@dataclass
class RawResponse:
    """A parsed answer; `elapsed` counts from the first byte sent."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def problem(self, status: int, code: str) -> dict[str, Any]:
        """Assert an RFC 9457 problem document with this status and code; return it."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.header("content-type") == PROBLEM_JSON, self.header("content-type")
        body = json.loads(self.body)
        assert set(body) >= PROBLEM_FIELDS, body
        assert isinstance(body["detail"], str), body
        assert (body["status"], body["code"]) == (status, code), body
        assert body["request_id"] == self.header("x-request-id"), body
        return dict(body)

    def parser_refusal(self) -> None:
        """Assert the HTTP parser refused the request (it answers before the app, in plain text)."""
        assert self.status == 400, (self.status, self.body[:500])
        assert self.header("connection") == "close"


def encode_request(
    method: str | bytes,
    target: str | bytes,
    headers: Sequence[Header] = (),
    body: bytes | None = None,
) -> bytes:
    """An HTTP/1.1 request as bytes; Host always, Content-Length when there is a body."""
    lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1", b"Host: kvkit"]
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in headers]
    names = {_bytes(name).lower() for name, _ in headers}
    if body is not None and not names & {b"content-length", b"transfer-encoding"}:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(payload_size: int, chunk_size: int = 65_536, *, finish: bool = True) -> Iterable[bytes]:
    """A chunked transfer-encoded body of `payload_size` spaces, with or without its last chunk."""
    sent = 0
    while sent < payload_size:
        size = min(chunk_size, payload_size - sent)
        yield b"%x\r\n" % size + b" " * size + b"\r\n"
        sent += size
    if finish:
        yield b"0\r\n\r\n"


class Wire:
    """Sends raw requests to one server and checks after each that it survived."""

    def __init__(self, server: Server) -> None:
        self.server = server
        parts = urlsplit(server.url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.log_offset = server.log_path.stat().st_size

    def request(
        self,
        method: str | bytes,
        target: str | bytes,
        headers: Sequence[Header] = (),
        body: bytes | None = None,
    ) -> RawResponse:
        """Send one request made of exactly these parts and return the parsed answer."""
        return self.send(encode_request(method, target, headers, body), method=_text(method))

    def send(self, head: bytes, body: Iterable[bytes] = (), *, method: str = "GET") -> RawResponse:
        """Send `head` then stream `body` from a thread, reading the answer as it comes.

        The answer may arrive before the body is sent whole (a refused upload); send errors after
        that point are expected and ignored.
        """
        with socket.create_connection(self.address, timeout=TIMEOUT) as sock:
            started = time.monotonic()
            sock.sendall(head)
            sender = threading.Thread(target=_stream, args=(sock, body), daemon=True)
            sender.start()
            response = http.client.HTTPResponse(sock, method=method)
            response.begin()
            raw = RawResponse(
                response.status, response.headers, response.read(), time.monotonic() - started
            )
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        sender.join(TIMEOUT)
        self.assert_survived()
        return raw

    def assert_survived(self) -> None:
        """The process lives, /healthz answers and nothing new in the log is a traceback."""
        assert self.server.process.poll() is None, "the server process died"
        assert httpx.get(self.server.url + "/healthz", timeout=TIMEOUT).status_code == 200
        with self.server.log_path.open("rb") as log:
            log.seek(self.log_offset)
            new = log.read()
        assert b"Traceback" not in new, new.decode(errors="replace")[-4000:]


def _stream(sock: socket.socket, chunks: Iterable[bytes]) -> None:
    with contextlib.suppress(OSError):
        for chunk in chunks:
            sock.sendall(chunk)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
