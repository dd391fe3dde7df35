"""Properties of docker-compose.yml and its documented settings file."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.settings import is_known_setting
from tests.deploy.tools import REPO, run_tool

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.compose.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def services() -> dict[str, dict[str, Any]]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: str(value) for name, value in env.items()}


def test_compose_file_matches_the_compose_spec() -> None:
    """docker-compose.yml validates against the Compose Specification schema."""
    args = ("--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    result = run_tool("check-jsonschema", *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_published_ports_listen_on_loopback_only() -> None:
    """No service is reachable from other machines."""
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_api_waits_for_healthy_stores_and_finished_migrations() -> None:
    """The API starts only after PostgreSQL and Redis are healthy and migrate has exited 0."""
    assert services()["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_migrate_runs_migrations_with_the_api_image() -> None:
    """The one-shot migrate service uses the API's image and waits for PostgreSQL."""
    api, migrate = services()["api"], services()["migrate"]
    assert migrate["image"] == api["image"]
    assert migrate["command"] == ["python", "-m", "app", "migrate"]
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_stores_and_api_have_healthchecks_without_curl() -> None:
    """postgres, redis and api declare healthchecks runnable in their images."""
    checks = {
        name: services()[name]["healthcheck"]["test"] for name in ("postgres", "redis", "api")
    }
    assert checks["postgres"][:2] == ["CMD", "pg_isready"]
    assert checks["redis"] == ["CMD", "redis-cli", "ping"]
    assert checks["api"][:2] == ["CMD", "python"]
    assert "curl" not in str(checks)


def test_load_generator_runs_only_under_the_load_profile() -> None:
    """locust starts only with --profile load, against the API service."""
    locust = services()["locust"]
    assert locust["profiles"] == ["load"]
    assert "http://api:8000" in locust["command"]
    assert any(volume.startswith("./loadtests:") for volume in locust["volumes"])
    unprofiled = [name for name, service in services().items() if "profiles" not in service]
    assert "locust" not in unprofiled


def test_no_secret_is_written_inline() -> None:
    """Passwords and keys come from .env.compose interpolation, never literal values."""
    for name, service in services().items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                match = INTERPOLATION.fullmatch(value)
                assert match, f"{name}: {variable} is a literal"
                assert ":-" not in value or value.endswith(":-}"), f"{name}: {variable} default"
            for credentials in re.findall(r"://[^/@]*@", value):
                assert "${" in credentials, f"{name}: {variable} embeds a literal password"


def test_every_required_variable_is_documented_in_the_example() -> None:
    """Each variable compose interpolates is listed in .env.compose.example."""
    documented = set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert used <= documented, used - documented


def test_example_holds_placeholders_only() -> None:
    """Every secret in the committed example is an obvious placeholder."""
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        if value and SECRET_NAME.search(name):
            assert "change-me" in value, name


def test_images_are_pinned_to_version_tags() -> None:
    """Every image names an explicit version, never latest."""
    for name, service in services().items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", name


def test_monitoring_files_mounted_into_containers_exist() -> None:
    """Every ./monitoring bind mount points at a file or folder in the repository."""
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./monitoring"):
                assert (REPO / source).exists(), f"{name}: {source}"


def test_api_containers_run_read_only_with_writable_scratch_dirs() -> None:
    """Like in Kubernetes, the API runs on a read-only root with tmpfs for /tmp and metrics."""
    for name in ("api", "migrate"):
        service = services()[name]
        assert service["read_only"] is True
        mounts = {entry.split(":", 1)[0] for entry in service["tmpfs"]}
        assert mounts == {"/tmp", "/run/kvkit/metrics"}


def test_api_environment_names_only_known_settings() -> None:
    """Every variable compose gives the API is one the app or gunicorn reads."""
    names = set(environment(services()["api"]))
    assert not {name for name in names if not is_known_setting(name)}


def test_api_sends_traces_to_the_collector() -> None:
    """The API's OTLP endpoint is the collector service, which forwards to Jaeger."""
    endpoint = environment(services()["api"])["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert re.fullmatch(r"http://otel-collector:431[78]", endpoint)
    assert "jaeger" in services()["otel-collector"]["depends_on"]
