"""The Django app that owns kvkit's models and migrations."""

from __future__ import annotations

from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "app.store"
    label = "kvstore"
    default_auto_field = "django.db.models.BigAutoField"
