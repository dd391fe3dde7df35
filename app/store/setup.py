"""Configure Django once per process, before any model import."""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_done: bool | None = None  # None: not set up; else whether for maintenance

# Read by app.store.django_settings when Django imports it.
maintenance = False


def setup_django(*, for_maintenance: bool = False) -> None:
    """Point Django at kvkit's settings module and load the app registry (idempotent).

    `for_maintenance` (migrate, purge-idempotency) bounds connections by the maintenance
    settings instead of KV_DB_TIMEOUT; a process is set up for one or the other, once."""
    global _done, maintenance
    with _lock:
        if _done is not None:
            if _done != for_maintenance:
                raise RuntimeError("Django is already set up with the other connection bounds")
            return
        maintenance = for_maintenance
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.store.django_settings")
        import django

        django.setup(set_prefix=False)
        from django.db.backends.signals import connection_created

        from app.store.databases import bound_new_connection

        connection_created.connect(bound_new_connection, dispatch_uid="kvkit-transaction-bounds")
        _done = for_maintenance
