"""DATABASE_URL into Django's DATABASES fields, libpq's multi-host PostgreSQL URLs included.

dj-database-url reads one host: `postgres://u@h1:5432,h2:5432/db` is an error to it, yet it is
how libpq (and psycopg 3 on top of it) fails over between servers: it tries the hosts in order
and, with `target_session_attrs=read-write`, keeps the first that accepts writes. Such a URL is
parsed here with the hosts taken out, so dj-database-url reads everything else exactly as it
does for one host, and the hosts and ports go back in as libpq's comma-separated lists. The
query string's parameters (`target_session_attrs`, `load_balance_hosts`, `sslmode`, ...) become
OPTIONS, which Django hands to psycopg as connection parameters.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import dj_database_url

# Stands in for the host list while dj-database-url reads the rest of the URL.
_PLACEHOLDER_HOST = "multi-host.invalid"
_POSTGRESQL_ENGINE = "django.db.backends.postgresql"


def parse_database_url(url: str) -> dict[str, Any]:
    """The DATABASES entry fields for `url`; a PostgreSQL URL may name several hosts.

    HOST and PORT then hold libpq's lists ("h1,h2" and "5432,5433"); a host given without a
    port leaves its item empty, which libpq reads as the default port.
    """
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return dict(dj_database_url.parse(url))
    single = parts._replace(netloc=f"{userinfo}{at}{_PLACEHOLDER_HOST}")
    config = dict(dj_database_url.parse(urlunsplit(single)))
    if config["ENGINE"] != _POSTGRESQL_ENGINE:
        raise ValueError(
            f"DATABASE_URL: several hosts are supported for PostgreSQL only, not {parts.scheme}"
        )
    hosts, ports = zip(*(_host_and_port(spec) for spec in hostlist.split(",")), strict=True)
    config["HOST"] = ",".join(hosts)
    config["PORT"] = ",".join(ports) if any(ports) else ""
    return config


def _host_and_port(spec: str) -> tuple[str, str]:
    """One `host[:port]` item of a host list; IPv6 addresses come in brackets."""
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"DATABASE_URL: malformed host {spec!r}")
        port = rest[1:]
    else:
        host, _, port = spec.partition(":")
    if not host:
        raise ValueError("DATABASE_URL: an empty host in the host list")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"DATABASE_URL: invalid port {port!r}")
    return unquote(host), port
