"""`migrate` that is safe when several replicas run it at once."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from app.store.setup import setup_django

# A fixed, project-specific advisory lock id.
_LOCK_ID = zlib.crc32(b"kvkit-migrate")
_LOCK_WAIT_SECONDS = 300


def migrate(verbosity: int = 1) -> None:
    """Apply migrations while holding a database-wide lock, so concurrent runs take turns."""
    setup_django()
    from django.core.management import call_command

    with _migration_lock():
        call_command("migrate", interactive=False, verbosity=verbosity)


@contextmanager
def _migration_lock() -> Iterator[None]:
    from django.db import connection

    vendor = connection.vendor
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_lock(%s)", [_LOCK_ID])
        elif vendor == "mysql":
            cursor.execute("SELECT GET_LOCK('kvkit-migrate', %s)", [_LOCK_WAIT_SECONDS])
            if cursor.fetchone()[0] != 1:
                raise RuntimeError("timed out waiting for another migration to finish")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])
            elif vendor == "mysql":
                cursor.execute("SELECT RELEASE_LOCK('kvkit-migrate')")
        connection.close()
