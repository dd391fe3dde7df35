"""docker-compose.yml read the way Docker Compose reads it, for tests that have no Docker engine.

There is no compose binary here, so this follows the Compose Specification's own rules for the
parts kvkit's file uses: YAML anchors and merge keys, `--env-file` parsing, and interpolation of
every string value (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
`${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}`, nested, and `$$` for a `$`).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.compose.example"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MissingVariable(ValueError):
    """A `${VAR:?message}` (or `${VAR?message}`) met an unset variable: compose refuses to start."""


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an `--env-file`: `NAME=value` lines; comments and blank lines skipped."""
    variables: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        variables[name.strip()] = value
    return variables


def filled_in_example() -> dict[str, str]:
    """The example's values with each change-me placeholder (each key of a list) replaced by a
    fresh random value, as a user fills in .env.compose; fresh keys also mean fresh limiter
    budgets in a shared Redis."""
    variables = read_env_file(ENV_EXAMPLE)
    for name, value in variables.items():
        if "change-me" in value:
            variables[name] = ",".join(secrets.token_urlsafe(24) for _ in value.split(","))
    return variables


def interpolate(text: str, variables: dict[str, str]) -> str:
    """`text` with every `$` expression replaced as compose replaces it."""
    value, end = _interpolate(text, 0, variables, closing=None)
    assert end == len(text)
    return value


def _interpolate(
    text: str, start: int, variables: dict[str, str], closing: str | None
) -> tuple[str, int]:
    """Interpolate from `start` to an unmatched `closing` brace; the result and where it ended."""
    out: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if closing and char == closing:
            return "".join(out), i
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            value, i = _braced(text, i + 2, variables)
            out.append(value)
        elif match := _NAME.match(text, i + 1):
            out.append(variables.get(match.group(), ""))
            i = match.end()
        else:
            raise ValueError(f"invalid interpolation at {i} in {text!r}")
    if closing:
        raise ValueError(f"unclosed '${{' in {text!r}")
    return "".join(out), i


def _braced(text: str, start: int, variables: dict[str, str]) -> tuple[str, int]:
    """One `${...}` whose name starts at `start`; its value and the index after its `}`."""
    match = _NAME.match(text, start)
    if match is None:
        raise ValueError(f"invalid variable name at {start} in {text!r}")
    name, i = match.group(), match.end()
    if text[i] == "}":
        return variables.get(name, ""), i + 1
    colon = text[i] == ":"
    operator = text[i + colon]
    if operator not in "-?+":
        raise ValueError(f"unknown operator {text[i : i + 2]!r} in {text!r}")
    argument, end = _interpolate(text, i + colon + 1, variables, closing="}")
    present = name in variables and (bool(variables[name]) or not colon)
    if operator == "-":
        value = variables[name] if present else argument
    elif operator == "+":
        value = argument if present else ""
    elif present:
        value = variables[name]
    else:
        raise MissingVariable(argument or f"{name} is required")
    return value, end + 1


def _resolve(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_resolve(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, variables) for key, value in node.items()}
    return node


def raw_services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    """The services as written (anchors merged), before interpolation."""
    compose: dict[str, Any] = yaml.safe_load(path.read_text())
    return compose["services"]


def resolved_services(variables: dict[str, str], path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    """The services with every value interpolated from `variables`, as `docker compose config`
    shows them; MissingVariable when a required variable is unset."""
    return _resolve(raw_services(path), variables)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether it is written as a mapping or a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def on_this_machine(
    env: dict[str, str], *, database_url: str, redis_url: str, otlp_endpoint: str, metrics_port: int
) -> dict[str, str]:
    """A kvkit service's compose environment with the other services' addresses (postgres,
    redis, otel-collector, the fixed metrics port) replaced by local ones; every other setting
    stays as the file has it."""
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    return {
        **env,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "KV_METRICS_PORT": str(metrics_port),
    }
