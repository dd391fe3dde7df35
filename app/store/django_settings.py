"""Django settings for the standalone ORM, derived from the kvkit settings object."""

from __future__ import annotations

from app.store import setup
from app.store.databases import maintenance_config, serving_config

DATABASES = {"default": maintenance_config() if setup.maintenance else serving_config()}
INSTALLED_APPS = ["app.store.apps.StoreConfig"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SECRET_KEY = "kvkit-has-no-sessions-or-signing"  # noqa: S105  # nosec B105  # Django requires one; unused
LOGGING_CONFIG = None
