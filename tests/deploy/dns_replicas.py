"""Prometheus against a service name that resolves to several replicas, as Docker's DNS answers.

Run inside a fresh network and mount namespace (see test_compose_prometheus.py), where
/etc/resolv.conf names this program's own DNS server on 127.0.0.1:53. That server answers one
name with one A record per replica address; a stub /metrics listens on each address at the
given port; Prometheus runs the given configuration. When every replica's target is up, or
after a deadline, the job's active targets are printed as JSON and everything stops.

    python dns_replicas.py PROMETHEUS NAME PORT JOB CONFIG DATA_DIR ADDRESS [ADDRESS ...]

Only the standard library is used, and only loopback addresses are ever contacted.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMETHEUS_ADDRESS = "127.0.0.1:9090"
TYPE_A, CLASS_IN = 1, 1
RCODE_NXDOMAIN = 3


def question_of(query: bytes) -> tuple[str, int, int]:
    """The queried name (lower case, no trailing dot), its type, and where the question ends."""
    labels, offset = [], 12
    while length := query[offset]:
        labels.append(query[offset + 1 : offset + 1 + length].decode().lower())
        offset += 1 + length
    qtype = struct.unpack("!H", query[offset + 1 : offset + 3])[0]
    return ".".join(labels), qtype, offset + 5


def answer(query: bytes, name: str, addresses: list[str]) -> bytes:
    """The reply to `query`: every address for A queries of `name`, an empty answer for its
    other types, NXDOMAIN for other names (RFC 1035 section 4.1)."""
    queried, qtype, end = question_of(query)
    (ident,) = struct.unpack("!H", query[:2])
    known = queried == name
    records = addresses if known and qtype == TYPE_A else []
    flags = 0x8180 | (0 if known else RCODE_NXDOMAIN)  # response, recursion desired/available
    header = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0)
    body = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 5, 4) + socket.inet_aton(address)
        for address in records  # 0xC00C points back at the question's name
    )
    return header + query[12:end] + body


def serve_dns(name: str, addresses: list[str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))

    def loop() -> None:
        while True:
            query, peer = sock.recvfrom(4096)
            try:
                sock.sendto(answer(query, name, addresses), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # not a query this server understands: no reply

    threading.Thread(target=loop, daemon=True).start()


def serve_metrics(address: str, port: int) -> None:
    """A /metrics endpoint on `address`, telling which replica answered."""
    body = f'kvkit_replica_probe{{address="{address}"}} 1\n'.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def active_targets(job: str) -> list[dict[str, object]]:
    url = f"http://{PROMETHEUS_ADDRESS}/api/v1/targets?state=active"
    with urllib.request.urlopen(url, timeout=2) as response:
        targets = json.load(response)["data"]["activeTargets"]
    return [target for target in targets if target["labels"].get("job") == job]


def main(argv: list[str]) -> int:
    binary, name, port, job, config, data_dir, *addresses = argv
    serve_dns(name, addresses)
    for address in addresses:
        serve_metrics(address, int(port))
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={PROMETHEUS_ADDRESS}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    targets: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and prometheus.poll() is None:
            try:
                targets = active_targets(job)
            except OSError:
                targets = []
            if len(targets) >= len(addresses) and all(t["health"] == "up" for t in targets):
                break
            time.sleep(0.5)
    finally:
        prometheus.terminate()
        _, errors = prometheus.communicate(timeout=30)
    json.dump({"targets": targets, "log": errors.decode(errors="replace")[-3000:]}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
