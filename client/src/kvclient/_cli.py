"""The `kv` command: JSON on stdout, one-line errors on stderr, and an exit code per failure kind.

Exit codes: 0 success, 1 the service refused (not found, conflict, ...), 2 usage error (bad
arguments, URL or value, found before anything is sent), 3 the service could not be reached or is
unavailable. `kv put` updates the key and creates it when it does not exist yet, unless
`--if-version` makes it a conditional update; `kv create` only creates. `kv ls` prints one JSON
item per line (JSON Lines); a reader that stops early (`kv ls | head`) ends it quietly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._client import KVClient
from ._exceptions import (
    KeyExists,
    KVError,
    NotFound,
    ServiceUnavailable,
    TransportError,
    UsageError,
    WouldBeRateLimited,
)
from ._retry import RetryPolicy
from ._version import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it
# A command line user waits at most this long for one call, retries included.
DEFAULT_TIMEOUT = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `kv` command and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    retry = RetryPolicy(max_attempts=args.max_attempts, deadline=args.timeout)
    try:
        with KVClient(args.url, api_key=os.environ.get("KV_API_KEY") or None, retry=retry) as kv:
            _run(kv, args)
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`kv ls | head`): stop quietly, and keep the interpreter's own
        # flush at exit from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE)
    except (TransportError, ServiceUnavailable, WouldBeRateLimited) as exc:
        return _fail(exc, EXIT_UNAVAILABLE)
    except KVError as exc:
        return _fail(exc, EXIT_API_ERROR)
    return EXIT_OK


def _run(kv: KVClient, args: argparse.Namespace) -> None:
    if args.command == "get":
        _print(kv.get(args.key).to_json())
    elif args.command == "create":
        _print(kv.create(args.key, args.value).to_json())
    elif args.command == "put" and args.if_version is not None:
        _print(kv.update(args.key, args.value, if_version=args.if_version).to_json())
    elif args.command == "put":
        _print(_put(kv, args.key, args.value).to_json())
    elif args.command == "del":
        kv.delete(args.key, if_version=args.if_version)
    else:
        page_size = min(args.limit, 1000) if args.limit else 100
        for item in itertools.islice(kv.iter_items(args.prefix, page_size), args.limit):
            _print(item.to_json())


def _put(kv: KVClient, key: str, value: Any) -> Any:
    try:
        return kv.update(key, value)
    except NotFound:
        try:
            return kv.create(key, value)
        except KeyExists:  # created by someone else in between: ours is the later write
            return kv.update(key, value)


def _print(document: Any) -> None:
    sys.stdout.write(json.dumps(document) + "\n")


def _fail(exc: Exception, code: int) -> int:
    sys.stderr.write("kv: error: " + " ".join(str(exc).split()) + "\n")
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kv",
        description="Read and write a kvkit service. "
        "KV_URL sets the service URL and KV_API_KEY its API key.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("KV_URL", DEFAULT_URL),
        help="service base URL (default: $KV_URL or %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up on a call after this long, retries included (default: %(default)s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=5,
        help="attempts per call, retries included (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser("get", help="print an item")
    get.add_argument("key")
    create = commands.add_parser("create", help="create an item; fails if the key exists")
    create.add_argument("key")
    create.add_argument("value", type=_json_value, metavar="JSON", help="the value as JSON")
    put = commands.add_parser("put", help="set an item's value, creating it if needed")
    put.add_argument("key")
    put.add_argument("value", type=_json_value, metavar="JSON", help="the value as JSON")
    put.add_argument("--if-version", type=_positive_int, metavar="N", help=_IF_VERSION_HELP)
    delete = commands.add_parser("del", help="delete an item")
    delete.add_argument("key")
    delete.add_argument("--if-version", type=_positive_int, metavar="N", help=_IF_VERSION_HELP)
    ls = commands.add_parser("ls", help="print items ordered by key, one JSON object per line")
    ls.add_argument("--prefix", help="only keys starting with this")
    ls.add_argument("--limit", type=_positive_int, help="print at most this many items")
    return parser


_IF_VERSION_HELP = "only if the item is still at version N (never creates it)"


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _positive_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return number
