"""Configure Django once per process, before any model import."""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_done = False


def setup_django() -> None:
    """Point Django at kvkit's settings module and load the app registry (idempotent)."""
    global _done
    with _lock:
        if _done:
            return
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.store.django_settings")
        import django

        django.setup(set_prefix=False)
        _done = True
