"""The environment variable names kvkit's processes read, for checking deployment files."""

from __future__ import annotations

import re

from tests.deploy.tools import REPO


def is_known_setting(name: str) -> bool:
    """True for a setting of the app (.env.example), of gunicorn.conf.py, or an OTEL_* variable."""
    app_settings = re.findall(
        r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M
    )
    gunicorn_conf = (REPO / "gunicorn.conf.py").read_text()
    return (
        name in app_settings
        or f'"{name}"' in gunicorn_conf
        or name.startswith("OTEL_")
        or name == "PROMETHEUS_MULTIPROC_DIR"
    )
