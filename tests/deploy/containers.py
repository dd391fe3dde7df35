"""Building kvkit's image with buildah and running it with podman, for the container tests.

No registry serves base images on the CI machines, so the image is built on a stand-in base made
from Debian's own packages with debootstrap: the same Debian release and Python minor version as
the pinned python slim image, with the interpreter where the official image keeps it. The stand-in
is kept in podman's storage and reused; buildah's layer cache makes a second build quick.

Every buildah and podman call goes through `buildah()` / `podman()`, which add the settings these
hosts need (the runc runtime, scripts/containers.conf for the ulimits) and the storage: a root of
the tests' own with the overlay driver where the kernel offers it, else vfs in podman's default
root. With vfs every build step copies the whole root filesystem: a build that changes nothing
took 4-5 minutes there, against 10 s on overlay.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CI, POSTGRES, REDIS, require

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
# A root of the tests' own, so they never meet a default root already set up for another driver.
OVERLAY_STORAGE = (
    "--storage-driver",
    "overlay",
    "--root",
    "/var/lib/containers/kvkit-tests",
    "--runroot",
    "/run/containers/kvkit-tests",
)
VFS_STORAGE = ("--storage-driver", "vfs")
# The stand-in for python:3.11.x-slim-bookworm; rebuilt only when podman no longer has it.
STANDIN_BASE = "localhost/kvkit-standin-python:3.11-bookworm"
IMAGE = "localhost/kvkit:test"
APP_UID = 10001
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("buildah", "podman", "runc", "debootstrap")


def require_container_tools() -> None:
    """Skip (fail with CI=true) unless buildah, podman, runc and debootstrap run here as root."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    reason = ""
    if missing:
        reason = f"{', '.join(missing)} not installed (.ci/run installs them with apt-get)"
    elif os.geteuid() != 0:
        reason = "building the stand-in base (debootstrap) and rootful podman need root"
    if not reason:
        return
    if CI:
        pytest.fail(f"{reason}; CI=true requires them")
    pytest.skip(reason)


def _environment() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


@functools.cache
def storage() -> tuple[str, ...]:
    """overlay storage when this kernel mounts it for podman, else vfs (always works, slowly)."""
    probe = _run(
        ["podman", *OVERLAY_STORAGE, "info", "--format", "{{.Store.GraphDriverName}}"],
        60,
        check=False,
    )
    return OVERLAY_STORAGE if probe.stdout.strip() == "overlay" else VFS_STORAGE


def buildah(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run buildah with the tests' storage; raise with its output when it fails."""
    return _run(["buildah", *storage(), *args], timeout)


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run podman with the tests' storage and the runc runtime."""
    return _run(["podman", "--runtime", "runc", *storage(), *args], timeout, check=check)


def _run(
    command: list[str], timeout: float, *, check: bool = True, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=stdin,
    )
    if check and result.returncode:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


# --------------------------------------------------------------------------- building


def ensure_standin_base() -> str:
    """The stand-in base image's name, made with debootstrap unless podman already has it."""
    if podman("image", "exists", STANDIN_BASE, check=False).returncode == 0:
        return STANDIN_BASE
    with tempfile.TemporaryDirectory(prefix="kvkit-standin-") as workdir:
        rootfs = Path(workdir) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
            ],
            timeout=900,
        )
        # Where the official image keeps its interpreter, and the plain `python` name it has.
        (rootfs / "usr/bin/python").symlink_to("python3")
        for name in ("python", "python3"):
            (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            _run(
                ["podman", *storage(), "import", "--change", "CMD=/bin/bash", "-", STANDIN_BASE],
                timeout=600,
                stdin=tar.stdout.fileno(),
            )
        finally:
            tar.stdout.close()
            tar.wait()
    return STANDIN_BASE


@dataclass(frozen=True)
class BuiltImage:
    """An image built from the working tree, and how long its build took."""

    name: str
    base: str
    build_seconds: float


def project_version() -> str:
    """The version pyproject.toml declares, which `make image` puts in the image's labels."""
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def build_image(base: str, tag: str = IMAGE) -> BuiltImage:
    """Build docker/Dockerfile on `base` as `make image` does without Docker (cached layers)."""
    started = time.monotonic()
    buildah(
        "bud",
        "--layers",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--format",
        "docker",  # the OCI format has no HEALTHCHECK
        # pip in the build verifies PyPI's certificate with the host's CA bundle.
        "-v",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"VERSION={project_version()}",
        "--build-arg",
        "REVISION=test",
        "-f",
        "docker/Dockerfile",
        "-t",
        tag,
        ".",
    )
    return BuiltImage(tag, base, time.monotonic() - started)


@functools.cache
def kvkit_image() -> BuiltImage:
    """The image of the working tree, built once per test session."""
    require_container_tools()
    return build_image(ensure_standin_base())


def image_size(name: str) -> int:
    """The image's size in bytes, as podman reports it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())


def inspect_image(name: str) -> dict[str, object]:
    """podman's description of the image (Config, Healthcheck, Labels, Size...)."""
    (inspected,) = json.loads(podman("image", "inspect", name).stdout)
    return dict(inspected)


@contextlib.contextmanager
def mounted_image(name: str) -> Iterator[Path]:
    """The image's root filesystem on the host, read-only, for listing its files."""
    path = Path(podman("image", "mount", name).stdout.strip())
    try:
        yield path
    finally:
        podman("image", "unmount", name, check=False)


# --------------------------------------------------------------------------- running


def writable_dir(parent: Path, name: str) -> Path:
    """A host directory the image's user owns, to mount where the read-only image must write."""
    path = parent / name
    path.mkdir(mode=0o700)
    os.chown(path, APP_UID, APP_UID)
    return path


@dataclass
class Container:
    """A container podman runs detached, by name."""

    name: str
    removed: bool = field(default=False)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False)

    def inspect(self) -> dict[str, object]:
        (inspected,) = json.loads(podman("container", "inspect", self.name).stdout)
        return dict(inspected)

    def host_pid(self) -> int:
        """The host's pid of the container's PID 1."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip())

    def signal(self, name: str) -> None:
        podman("kill", "--signal", name, self.name)

    def wait(self, timeout: float) -> int:
        """The container's exit code, waiting at most `timeout` seconds for it."""
        result = podman("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        if not self.removed:
            podman("rm", "--force", "--time", "2", self.name, check=False)
            self.removed = True


def run_container(
    image: str,
    *,
    env: dict[str, str],
    volumes: dict[Path, str],
    command: tuple[str, ...] = (),
    detach: bool = True,
) -> Container | subprocess.CompletedProcess[str]:
    """Run the image like the Deployment does: host network, read-only root, host dirs mounted.

    `--read-only-tmpfs=false`: without it podman adds writable tmpfs mounts (/run, /tmp,
    /var/tmp) that readOnlyRootFilesystem in Kubernetes does not, and the test would prove less.
    """
    name = f"kvkit-test-{uuid.uuid4().hex[:10]}"
    args = ["--name", name, "--network", "host", "--read-only", "--read-only-tmpfs=false"]
    for host_path, container_path in volumes.items():
        args += ["-v", f"{host_path}:{container_path}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    if not detach:
        return podman("run", "--rm", *args, image, *command, check=False, timeout=180)
    podman("run", "--detach", *args, image, *command)
    return Container(name)


def wait_until_healthy(url: str, container: Container, timeout: float = 60) -> None:
    """Wait until GET `url` answers 200; fail with the container's log when it never does."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        state = container.inspect()["State"]
        assert isinstance(state, dict)
        if not state.get("Running"):
            raise RuntimeError(f"container exited {state.get('ExitCode')}:\n{container.logs()}")
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s:\n{container.logs()}")


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class PrivateDatabase:
    """A database of the test's own on the shared PostgreSQL."""

    name: str

    @property
    def url(self) -> str:
        return f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{self.name}"

    def connect(self, autocommit: bool = True):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host=POSTGRES[0],
            port=POSTGRES[1],
            user="postgres",
            dbname=self.name,
            autocommit=autocommit,
        )


@contextlib.contextmanager
def private_database() -> Iterator[PrivateDatabase]:
    """An empty database, created for the test and dropped after it (as tests/conftest.py does)."""
    require(POSTGRES, "PostgreSQL")
    import psycopg

    database = PrivateDatabase(f"kvkit_image_{uuid.uuid4().hex[:10]}")
    admin = f"host={POSTGRES[0]} port={POSTGRES[1]} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database.name}"')
    try:
        yield database
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


def redis_url() -> str:
    """The shared Redis, which the containers reach on loopback through the host network."""
    require(REDIS, "Redis")
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"
