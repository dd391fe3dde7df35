"""The image's own command lines, run natively against the local PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import yaml

from tests.conftest import Databases, Server, free_port, service_env, wait_until_up

REPO = Path(__file__).resolve().parents[2]


def _final_stage_instructions() -> list[str]:
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    return [line.strip() for line in stages[-1].splitlines() if line.strip()]


def _image_cmd() -> list[str]:
    cmd = next(line for line in _final_stage_instructions() if line.startswith("CMD "))
    return list(json.loads(cmd.removeprefix("CMD ")))


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in _final_stage_instructions():
        if line.startswith("ENV "):
            for name, value in re.findall(r"(\w+)=(\S+)", line.removeprefix("ENV ")):
                env[name] = value
    return env


def test_image_command_serves_crud_on_postgres_and_redis(
    databases: Databases, redis_url: str, tmp_path: Path
) -> None:
    """compose's migrate command, then the Dockerfile's CMD, serve CRUD on PostgreSQL + Redis."""
    database_url = databases.url("postgres")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    migrate = compose["services"]["migrate"]["command"]
    env = service_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        KV_API_KEYS=(api_key := uuid.uuid4().hex),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    metrics_dir = tmp_path / "metrics"
    image_env = _image_env()
    assert "PROMETHEUS_MULTIPROC_DIR" in image_env
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # the image's path, relocated for the test
    subprocess.run(migrate, check=True, cwd=REPO, env=env, capture_output=True, timeout=120)

    port = free_port()
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2")
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        _image_cmd(),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, tmp_path / "gunicorn.log", env)
    try:
        wait_until_up(server)
        client = httpx.Client(base_url=server.url, headers={"X-API-Key": api_key}, timeout=10)
        key = f"smoke-{uuid.uuid4().hex[:8]}"
        assert client.post("/v1/items", json={"key": key, "value": [1]}).status_code == 201
        assert client.get(f"/v1/items/{key}").json()["value"] == [1]
        assert client.put(f"/v1/items/{key}", json={"value": 2}).json()["version"] == 2
        assert client.delete(f"/v1/items/{key}").status_code == 204
        assert client.get(f"/v1/items/{key}").status_code == 404
        assert client.get("/readyz").json() == {"status": "ok", "database": "up", "redis": "up"}
        client.close()
    finally:
        assert server.stop() == 0  # SIGTERM: gunicorn shuts down cleanly
        log.close()
    assert metrics_dir.is_dir()  # created (and wiped) by the gunicorn config at start
