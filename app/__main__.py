"""Command line: `python -m app migrate | purge-idempotency`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="kvkit management")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or update the database schema")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        from app.store.migrate import migrate

        migrate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
