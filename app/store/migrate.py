"""`migrate` that is safe when several replicas run it at once."""

from __future__ import annotations

from app.store.setup import setup_django


def migrate(verbosity: int = 1) -> None:
    """Apply migrations while holding a database-wide lock, so concurrent runs take turns."""
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from app.store import dialects

    try:
        with connection.cursor() as cursor, dialects.current().migration_lock(cursor):
            call_command("migrate", interactive=False, verbosity=verbosity)
    finally:
        connection.close()
