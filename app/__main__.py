"""Command line: `python -m app migrate | purge-idempotency | healthcheck`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="kvkit management")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or update the database schema")
    purge_parser = commands.add_parser(
        "purge-idempotency", help="delete expired Idempotency-Key records"
    )
    purge_parser.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep running: purge again every SECONDS (compose's purge service)",
    )
    commands.add_parser(
        "healthcheck", help="exit 0 when the server on GUNICORN_BIND answers /healthz (the image's)"
    )
    args = parser.parse_args(argv)

    if args.command == "migrate":
        from app.store.migrate import migrate

        migrate()
    elif args.command == "purge-idempotency":
        return purge(args.every)
    elif args.command == "healthcheck":
        import os

        from app.healthcheck import healthy

        # The same variable and default as gunicorn.conf.py, so the probe follows the bind.
        return 0 if healthy(os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")) else 1
    return 0


def purge(every: float | None) -> int:
    """Purge once, or forever every `every` seconds; a failed purge is reported, and ends a
    single run with exit 1 (the CronJob retries it), a repeating one tries again next time."""
    import time

    from app.config import get_settings
    from app.store.setup import setup_django

    setup_django(for_maintenance=True)
    from django.db import DatabaseError, connection

    from app.store.maintenance import purge_expired_idempotency

    batch_size = get_settings().purge_batch_size
    while True:
        try:
            result = purge_expired_idempotency(batch_size)
        except DatabaseError as exc:
            print(f"purge-idempotency failed: {exc}", file=sys.stderr, flush=True)
            if every is None:
                return 1
        else:
            print(
                f"deleted {result.deleted} expired idempotency records in {result.batches} batches",
                flush=True,
            )
        finally:
            connection.close()  # a fresh connection for the next run, after any failure
        if every is None:
            return 0
        time.sleep(every)


if __name__ == "__main__":
    sys.exit(main())
