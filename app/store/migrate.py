"""`migrate` that is safe when several replicas run it at once."""

from __future__ import annotations

from app.config import get_settings
from app.store.setup import setup_django


def migrate(verbosity: int = 1) -> None:
    """Apply migrations while holding a database-wide lock, so concurrent runs take turns.

    Connections are bounded by the maintenance settings, not KV_DB_TIMEOUT: waiting for another
    replica's migration, or a step slower than a request may be, is not a failure."""
    setup_django(for_maintenance=True)
    from django.core.management import call_command
    from django.db import connection

    from app.store import dialects

    wait = get_settings().migrate_lock_timeout
    try:
        with connection.cursor() as cursor, dialects.current().migration_lock(cursor, wait):
            call_command("migrate", interactive=False, verbosity=verbosity)
    finally:
        connection.close()
