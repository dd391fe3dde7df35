"""Properties of docker/Dockerfile and .dockerignore, plus hadolint's verdict."""

from __future__ import annotations

import json
import posixpath
import re
import runpy

from tests.deploy.tools import REPO, run_tool

DOCKERFILE = REPO / "docker" / "Dockerfile"

Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """The Dockerfile as (KEYWORD, arguments) pairs, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in logical.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def stages() -> list[list[Instruction]]:
    """Instructions grouped by build stage, each starting with its FROM (global ARGs left out)."""
    grouped: list[list[Instruction]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append((keyword, args))
    return grouped


def final_stage() -> list[Instruction]:
    return stages()[-1]


def base_image(stage: list[Instruction]) -> str:
    return stage[0][1].split()[0]


def test_hadolint_reports_nothing() -> None:
    """hadolint finds no issue at any severity, with no rule ignored."""
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    assert not list(REPO.glob(".hadolint.y*ml"))


def test_build_is_multi_stage_with_the_venv_copied_from_the_builder() -> None:
    """The runtime stage takes only the virtualenv from the builder stage."""
    assert len(stages()) >= 2
    copies_from = [args for keyword, args in final_stage() if "--from=" in args]
    assert copies_from == ["--from=builder /opt/venv /opt/venv"]


def test_final_stage_installs_no_compilers() -> None:
    """No build toolchain reaches the runtime image."""
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in runs


def build_args() -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the ones FROM may use)."""
    declared: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            declared[name] = default
    return declared


def test_base_images_are_pinned_slim_python_tags() -> None:
    """Every stage starts from one BASE_IMAGE argument, by default a pinned python:3.11.x slim
    tag, so an air-gapped build can point it at a mirror."""
    assert {base_image(stage) for stage in stages()} == {"${BASE_IMAGE}"}
    default = build_args()["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default), default


def test_dependencies_come_from_the_hash_lock_before_the_source() -> None:
    """Locked dependencies install in a layer of their own before any source is copied, so a
    source change reuses it; the project itself then installs without resolving anything."""
    builder = stages()[0]
    runs = [i for i, (keyword, args) in enumerate(builder) if keyword == "RUN"]
    locked = next(i for i in runs if "--require-hashes" in builder[i][1])
    assert "--no-deps -r requirements/runtime.txt" in builder[locked][1]
    copies_before = [args for keyword, args in builder[:locked] if keyword == "COPY"]
    assert copies_before == ["requirements/runtime.txt requirements/build.txt requirements/"]
    installs_after = " ".join(args for keyword, args in builder[locked + 1 :] if keyword == "RUN")
    assert "pip install --no-cache-dir --no-deps" in installs_after
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "!requirements/runtime.txt" in ignored and "!requirements/dev.txt" not in ignored


def test_image_carries_oci_labels_from_build_args() -> None:
    """version, revision and source labels come from build arguments `make image` passes."""
    labels = " ".join(args for keyword, args in final_stage() if keyword == "LABEL")
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{name}="${{{arg}}}"' in labels
        assert any(k == "ARG" and a.startswith(f"{arg}=") for k, a in final_stage())


def _pins(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text()
    return dict(re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M))


def test_dev_lock_agrees_with_the_runtime_lock() -> None:
    """The venv installs every runtime package at the version the image installs, all hashed."""
    runtime, dev = _pins("runtime.txt"), _pins("dev.txt")
    assert len(runtime) > 40
    assert {name: dev.get(name) for name in runtime} == runtime
    for lock in ("runtime.txt", "dev.txt", "build.txt"):
        text = (REPO / "requirements" / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[-1])
        assert all("--hash=sha256:" in block for block in blocks if "==" in block), lock


def test_final_stage_runs_as_numeric_uid_of_10001_or_more() -> None:
    """The runtime user is numeric (checkable by runAsNonRoot) and not a host UID."""
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert int(uid) >= 10001
    assert not gid or int(gid) >= 10001


def test_cmd_and_entrypoint_use_exec_form() -> None:
    """gunicorn runs as PID 1 and receives SIGTERM directly."""
    commands = [args for keyword, args in instructions() if keyword in {"CMD", "ENTRYPOINT"}]
    assert commands
    for args in commands:
        assert isinstance(json.loads(args), list), args


def test_server_is_gunicorn_with_the_uvicorn_worker_package() -> None:
    """The image runs a plain gunicorn; gunicorn.conf.py selects uvicorn-worker's worker."""
    (cmd,) = [json.loads(args) for keyword, args in final_stage() if keyword == "CMD"]
    assert cmd == ["gunicorn", "app.main:app"]
    conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert "uvicorn.workers" not in (REPO / "gunicorn.conf.py").read_text()


def test_config_file_lands_where_gunicorn_looks_for_it() -> None:
    """gunicorn.conf.py reaches the final WORKDIR, where gunicorn reads it without -c."""
    workdir = [args for keyword, args in final_stage() if keyword == "WORKDIR"][-1]
    destinations = [
        posixpath.join(workdir, args.split()[-1])
        for keyword, args in final_stage()
        if keyword == "COPY" and args.split()[0] == "gunicorn.conf.py"
    ]
    assert destinations == [f"{workdir}/gunicorn.conf.py"]
    assert "!gunicorn.conf.py" in (REPO / ".dockerignore").read_text().splitlines()


def test_healthcheck_uses_python_not_curl() -> None:
    """The healthcheck is the app's own probe of the configured bind: it works in a slim image,
    which has no curl or wget."""
    (check,) = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    # app/healthcheck.py probes /healthz on GUNICORN_BIND, so a moved bind keeps it true.
    assert command == ["python", "-m", "app", "healthcheck"]
    assert "curl" not in check and "wget" not in check


def test_metrics_dir_is_set_and_owned_by_the_runtime_user() -> None:
    """PROMETHEUS_MULTIPROC_DIR exists and belongs to UID 10001, even without a volume."""
    env = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    match = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", env)
    assert match
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert f"mkdir -p {match.group(1)}" in runs
    assert "chown -R 10001:10001" in runs


def test_the_api_and_metrics_ports_are_exposed() -> None:
    """The image documents the port gunicorn binds and the metrics port it sets."""
    assert ("EXPOSE", "8000 9100") in final_stage()


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    """The build context starts empty and never carries venvs, git data, databases or .env."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    for pattern in (".git", ".venv", "**/.env", "**/*.sqlite3", "**/__pycache__", "**/build"):
        assert pattern in patterns
