"""Properties of docker-compose.yml and its documented settings file."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.config import Settings
from tests.deploy import compose
from tests.deploy.compose import COMPOSE, ENV_EXAMPLE, environment
from tests.deploy.settings import is_known_setting
from tests.deploy.tools import REPO, run_tool

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")
# What the official images' entrypoints need back after `cap_drop: [ALL]`; every other service
# needs none. postgres chowns its data directory and switches user with gosu.
CAPABILITIES_ADDED = {"postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}}


def services() -> dict[str, dict[str, Any]]:
    return compose.raw_services()


def example_services() -> dict[str, dict[str, Any]]:
    """The services as compose resolves them with the example's values."""
    return compose.resolved_services(compose.read_env_file(ENV_EXAMPLE))


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
    """postgres, redis and api declare healthchecks runnable in their images; the API's is the
    app's own probe, which follows GUNICORN_BIND instead of a hard-coded address."""
    checks = {
        name: services()[name]["healthcheck"]["test"] for name in ("postgres", "redis", "api")
    }
    assert checks["postgres"][:2] == ["CMD", "pg_isready"]
    assert checks["redis"] == ["CMD", "redis-cli", "ping"]
    assert checks["api"] == ["CMD", "python", "-m", "app", "healthcheck"]
    assert "curl" not in str(checks)


def test_one_shot_and_purge_containers_switch_off_the_images_api_healthcheck() -> None:
    """migrate and purge never open the API port the image's HEALTHCHECK probes, so compose does
    not run that probe (it would mark the purge service unhealthy forever)."""
    for name in ("migrate", "purge"):
        assert services()[name]["healthcheck"] == {"disable": True}, name


def test_purge_repeats_hourly_after_migrations_with_the_api_image() -> None:
    """purge runs the API's image and settings, starts once migrate exited 0, purges expired
    Idempotency-Key records every hour and is restarted unless stopped."""
    api, purge = services()["api"], services()["purge"]
    assert purge["image"] == api["image"]
    assert environment(purge) == environment(api)
    assert purge["command"] == ["python", "-m", "app", "purge-idempotency", "--every", "3600"]
    assert purge["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert purge["restart"] == "unless-stopped"
    assert "ports" not in purge


def test_load_generator_runs_only_under_the_load_profile() -> None:
    """locust starts only with --profile load, against the API service."""
    locust = services()["locust"]
    assert locust["profiles"] == ["load"]
    assert "http://api:8000" in locust["command"]
    assert any(volume.startswith("./loadtests:") for volume in locust["volumes"])
    unprofiled = [name for name, service in services().items() if "profiles" not in service]
    assert "locust" not in unprofiled


def test_load_generator_runs_headless_for_a_bounded_time() -> None:
    """`--profile load up` starts the run at once (no browser step) and stops it by itself;
    users, spawn rate and run time come from .env.compose."""
    command = services()["locust"]["command"]
    assert "--headless" in command
    for option, variable in (
        ("--users", "KV_LOAD_USERS"),
        ("--spawn-rate", "KV_LOAD_SPAWN_RATE"),
        ("--run-time", "KV_LOAD_RUN_TIME"),
    ):
        match = INTERPOLATION.fullmatch(command[command.index(option) + 1])
        assert match and match.group(1) == variable, option
    assert "ports" not in services()["locust"]  # headless: no web UI to publish


def example_load_keys() -> list[str]:
    return environment(example_services()["locust"])["KV_LOAD_API_KEYS"].split(",")


def test_api_accepts_every_key_the_load_generator_sends() -> None:
    """With the example's values the API's settings list each load key besides the clients'
    keys, so the load profile is never answered 401."""
    api_keys = environment(example_services()["api"])["KV_API_KEYS"]
    accepted = {
        key.get_secret_value() for key in Settings(_env_file=None, KV_API_KEYS=api_keys).api_keys
    }
    client_keys = compose.read_env_file(ENV_EXAMPLE)["KV_API_KEYS"].split(",")
    assert set(example_load_keys()) <= accepted
    assert set(client_keys) <= accepted


def test_load_keys_are_optional_for_the_api() -> None:
    """Without load keys the API still starts, accepting the clients' keys only."""
    variables = compose.read_env_file(ENV_EXAMPLE)
    del variables["KV_LOAD_API_KEYS"]
    api_keys = environment(compose.resolved_services(variables)["api"])["KV_API_KEYS"]
    accepted = Settings(_env_file=None, KV_API_KEYS=api_keys).api_keys
    assert [key.get_secret_value() for key in accepted] == variables["KV_API_KEYS"].split(",")


def test_example_gives_each_load_user_a_key_of_its_own() -> None:
    """The example's distinct load keys are as many as the default users, so no two users
    share a key's 60/minute budget and the rate grows with the users."""
    keys = example_load_keys()
    command = example_services()["locust"]["command"]
    users = int(command[command.index("--users") + 1])
    assert len(set(keys)) == len(keys) == users >= 50


def test_load_generator_paces_under_the_apis_own_limit() -> None:
    """The locustfile paces each key under the limit the API enforces, whatever it is set to."""
    variables = {**compose.read_env_file(ENV_EXAMPLE), "KV_RATE_LIMIT": "30/minute"}
    resolved = compose.resolved_services(variables)
    paced = environment(resolved["locust"])["KV_LOAD_RATE_LIMIT"]
    assert paced == environment(resolved["api"])["KV_RATE_LIMIT"] == "30/minute"


def test_no_secret_is_written_inline() -> None:
    """Passwords and keys come from .env.compose interpolation, never literal values: a secret
    is one or more interpolations (a list joins them with commas), none with a default."""
    for name, service in services().items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert INTERPOLATION.search(value), f"{name}: {variable} is a literal"
                literal = INTERPOLATION.sub("", value)
                assert not literal.strip(", "), f"{name}: {variable} has literal {literal!r}"
                for match in INTERPOLATION.finditer(value):
                    default = match.group().endswith(":-}") or ":-" not in match.group()
                    assert default, f"{name}: {variable} default"
            for credentials in re.findall(r"://[^/@]*@", value):
                assert "${" in credentials, f"{name}: {variable} embeds a literal password"


def test_every_required_variable_is_documented_in_the_example() -> None:
    """Each variable compose interpolates is listed in .env.compose.example."""
    documented = set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert used <= documented, used - documented


def test_example_holds_placeholders_only() -> None:
    """Every secret in the committed example, each key of a list too, is an obvious placeholder."""
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.lstrip("# ").partition("=")
        if value and SECRET_NAME.search(name):
            assert all("change-me" in part for part in value.split(",")), name


def test_example_resolves_and_compose_refuses_to_start_without_secrets() -> None:
    """The example's values satisfy every required variable; without them compose stops with
    the message saying which one to set."""
    assert example_services()["api"]["image"]
    with pytest.raises(compose.MissingVariable, match=r"set POSTGRES_PASSWORD in \.env\.compose"):
        compose.resolved_services({})


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
    for name in ("api", "migrate", "purge"):
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


def test_every_container_drops_all_capabilities_and_privilege_gain() -> None:
    """Each service drops every Linux capability and sets no-new-privileges."""
    for name, service in services().items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_only_postgres_adds_back_what_its_entrypoint_needs() -> None:
    """postgres gets back exactly the capabilities its entrypoint uses; no other service any."""
    added = {
        name: set(service["cap_add"])
        for name, service in services().items()
        if "cap_add" in service
    }
    assert added == CAPABILITIES_ADDED


def test_redis_runs_as_its_own_user_so_needs_no_capability() -> None:
    """Redis starts as the image's redis user: its entrypoint then neither chowns nor switches
    user, which cap_drop ALL would refuse."""
    assert services()["redis"]["user"] == "redis"


def test_every_container_has_memory_and_cpu_limits() -> None:
    """Each service is bounded in memory and CPU: one runaway container cannot starve the rest."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    for name, service in services().items():
        limits = service["deploy"]["resources"]["limits"]
        memory = re.fullmatch(r"(\d+)([KMG])", str(limits["memory"]))
        assert memory, f"{name}: memory {limits['memory']!r}"
        assert int(memory[1]) * units[memory[2]] >= 128 * 2**20, name
        assert 0 < float(limits["cpus"]) <= 2, name


def test_api_scales_to_several_replicas() -> None:
    """`--scale api=N` works: no fixed container name, and a host port range with room for
    ten replicas instead of one port that a second replica could not bind."""
    api = services()["api"]
    assert "container_name" not in api
    (port,) = api["ports"]
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)-(\d+):8000", port)
    assert match and int(match[1]) == 8000 and int(match[2]) - int(match[1]) + 1 >= 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "x"),
        ("$SET-$$", "x-$"),
        ("${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${SET:-d}", "d|d||x"),
        ("${UNSET:+r}|${EMPTY:+r}|${EMPTY+r}|${SET:+r}", "||r|r"),
        ("${UNSET:-${SET}y}", "xy"),
        ("${SET},${UNSET:-}", "x,"),
    ],
)
def test_interpolation_follows_the_compose_specification(text: str, expected: str) -> None:
    """The tests' reading of compose values substitutes as the Compose Specification says."""
    assert compose.interpolate(text, {"SET": "x", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${UNSET:?say so}", "${EMPTY:?say so}", "${UNSET?say so}"])
def test_required_variables_stop_interpolation_with_their_message(text: str) -> None:
    """An unset (or, with the colon, empty) required variable raises with the file's message."""
    with pytest.raises(compose.MissingVariable, match="say so"):
        compose.interpolate(text, {"EMPTY": ""})
