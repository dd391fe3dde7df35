"""Command line: `python -m app migrate | purge-idempotency`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="kvkit management")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or update the database schema")
    commands.add_parser("purge-idempotency", help="delete expired Idempotency-Key records")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        from app.store.migrate import migrate

        migrate()
    elif args.command == "purge-idempotency":
        from app.store.setup import setup_django

        setup_django()
        from app.store.idempotency import purge_expired

        print(f"deleted {purge_expired()} expired idempotency records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
