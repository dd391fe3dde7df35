"""The dev overlay's API pod, run by `podman kube play` from the kustomize render.

The test takes the Deployment named kvkit-api and the ConfigMaps and Secrets it references from
the render, whatever else the render holds, and runs its pod as written, initContainers included.
`harness_yaml` makes the few substitutions podman on one host needs; each says why.
"""

from __future__ import annotations

import base64
import copy
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import free_port, migrate
from tests.deploy import containers
from tests.deploy.containers import PrivateDatabase

Manifest = dict[str, Any]
DEPLOYMENT = "kvkit-api"


def _pod_containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def referenced(spec: Manifest) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a pod spec reads (envFrom, env, volumes)."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for container in _pod_containers(spec):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config_maps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
        for var in container.get("env", []):
            value_from = var.get("valueFrom", {})
            if "configMapKeyRef" in value_from:
                config_maps.add(value_from["configMapKeyRef"]["name"])
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"]["name"])
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            config_maps.add(volume["configMap"]["name"])
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
    return config_maps, secrets


def _secret_as_config_map(secret: Manifest) -> Manifest:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": secret["metadata"], "data": data}


def _bind_port(bind: str) -> int:
    return int(bind.split(",")[0].rsplit(":", 1)[-1])


def harness_yaml(
    render: list[Manifest], image: str, overrides: dict[str, str], pod_name: str
) -> tuple[str, Manifest, dict[str, str]]:
    """The Deployment and what it references, as podman on this host can run them.

    Returns the YAML, the substituted Deployment and the environment its main container sees
    from its ConfigMaps (after the substitutions).
    """
    (deployment,) = [
        copy.deepcopy(m)
        for m in render
        if m["kind"] == "Deployment" and m["metadata"]["name"] == DEPLOYMENT
    ]
    spec = deployment["spec"]["template"]["spec"]
    config_map_names, secret_names = referenced(spec)
    config_maps = [
        copy.deepcopy(m)
        for m in render
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] in config_map_names
    ]
    # podman 4.3 reads envFrom.secretRef only from its own secret store, not from the YAML:
    # the referenced Secrets become ConfigMaps of the same name, and their references follow.
    config_maps += [
        _secret_as_config_map(m)
        for m in render
        if m["kind"] == "Secret" and m["metadata"]["name"] in secret_names
    ]
    for container in _pod_containers(spec):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                source["configMapRef"] = source.pop("secretRef")
        for var in container.get("env", []):
            value_from = var.get("valueFrom", {})
            if "secretKeyRef" in value_from:
                value_from["configMapKeyRef"] = value_from.pop("secretKeyRef")
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            secret = volume.pop("secret")
            volume["configMap"] = {"name": secret.pop("secretName"), **secret}

    settings: dict[str, str] = {}
    for config_map in config_maps:
        settings.update(config_map.get("data") or {})
    # The pod shares the host's network (no cluster network here), so the ports the render's
    # settings use are replaced by free ones, and probes follow them.
    port_map = {
        _bind_port(settings.get("GUNICORN_BIND", "0.0.0.0:8000")): overrides["GUNICORN_BIND"],
        int(settings.get("KV_METRICS_PORT", "9100")): overrides["KV_METRICS_PORT"],
    }
    for container in _pod_containers(spec):
        # The test's image stands in for the registry image the render names.
        container["image"] = image
        container["imagePullPolicy"] = "Never"
        named = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        # podman refuses `ports` with host networking; probes name them, so they become numbers.
        container.pop("ports", None)
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            http_get = container.get(probe_name, {}).get("httpGet")
            if http_get is None:
                continue
            port = named.get(http_get["port"], http_get["port"])
            http_get["port"] = _bind_port(port_map.get(int(port), str(port)))
        # The local PostgreSQL and Redis, and free ports, in place of the cluster's services.
        env = [var for var in container.get("env", []) if var["name"] not in overrides]
        container["env"] = [*env, *({"name": k, "value": v} for k, v in overrides.items())]
    for config_map in config_maps:
        data = config_map.get("data") or {}
        data.update({k: v for k, v in overrides.items() if k in data})
    settings.update(overrides)
    # podman 4.3 removes a finished "once" initContainer while it still counts as running and
    # then refuses to start the pod; "always" keeps it (the container runs the same, once here).
    # podman reads this from the Deployment's own annotations.
    annotations = deployment["metadata"].setdefault("annotations", {})
    annotations["io.podman.annotations.init.container.type"] = "always"
    # A name of the test's own, so the pod never meets another run's.
    deployment["metadata"]["name"] = pod_name
    documents = [*config_maps, deployment]
    return yaml.safe_dump_all(documents, sort_keys=False), deployment, settings


@pytest.fixture(scope="module")
def image() -> containers.BuiltImage:
    """The image of the working tree (built once per session)."""
    return containers.kvkit_image()


@pytest.fixture(scope="module")
def database() -> Iterator[PrivateDatabase]:
    with containers.private_database() as database:
        yield database


class Pod:
    """The played pod: its API URL, settings and substituted Deployment."""

    def __init__(self, name: str, deployment: Manifest, settings: dict[str, str]) -> None:
        self.name = name
        self.deployment = deployment
        self.settings = settings
        self.url = f"http://127.0.0.1:{_bind_port(settings['GUNICORN_BIND'])}"

    @property
    def main_container(self) -> Manifest:
        return self.deployment["spec"]["template"]["spec"]["containers"][0]

    @property
    def init_containers(self) -> list[Manifest]:
        return list(self.deployment["spec"]["template"]["spec"].get("initContainers", []))


@pytest.fixture(scope="module")
def pod(
    kustomize: Callable[[str], list[Manifest]],
    image: containers.BuiltImage,
    database: PrivateDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pod]:
    """The dev overlay's API pod, played with the host network, torn down afterwards."""
    render = kustomize("overlays/dev")
    overrides = {
        "DATABASE_URL": database.url,
        "REDIS_URL": containers.redis_url(),
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "KV_METRICS_PORT": str(free_port()),
    }
    name = f"kvkit-api-test-{uuid.uuid4().hex[:8]}"
    text, deployment, settings = harness_yaml(render, image.name, overrides, name)
    played = Pod(name, deployment, settings)
    if not any(c["name"] == "migrate" for c in played.init_containers):
        # The render migrates elsewhere (a Job), which this pod does not run: migrate here.
        migrate(database.url, tmp_path_factory.mktemp("pod-migrate"))
    manifest = tmp_path_factory.mktemp("pod") / "pod.yaml"
    manifest.write_text(text)
    try:
        containers.podman("kube", "play", "--network", "host", str(manifest), timeout=300)
        _wait_until_serving(played)
        yield played
    finally:
        containers.podman("kube", "down", str(manifest), check=False)
        containers.podman("pod", "rm", "--force", f"{name}-pod", check=False)


def _pod_logs(pod: Pod) -> str:
    result = containers.podman("pod", "logs", f"{pod.name}-pod", check=False)
    return result.stdout + result.stderr


def _wait_until_serving(pod: Pod, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{pod.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the pod never served {pod.url}/healthz:\n{_pod_logs(pod)}")


def test_pod_serves_crud(pod: Pod, database: PrivateDatabase) -> None:
    """The played pod (after its initContainers) serves create, read, update, list, delete."""
    api_key = pod.settings["KV_API_KEYS"].split(",")[0]
    key = f"pod-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=pod.url, headers={"X-API-Key": api_key}, timeout=10) as client:
        assert client.post("/v1/items", json={"key": key, "value": [1]}).status_code == 201
        etag = client.get(f"/v1/items/{key}").headers["ETag"]
        updated = client.put(f"/v1/items/{key}", json={"value": 2}, headers={"If-Match": etag})
        assert updated.json()["version"] == 2
        assert [i["key"] for i in client.get("/v1/items", params={"prefix": key}).json()["items"]]
        assert client.delete(f"/v1/items/{key}").status_code == 204
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM kv_item WHERE key = %s", (key,)).fetchone() == (
            0,
        )


@pytest.mark.parametrize("probe_name", ["livenessProbe", "readinessProbe", "startupProbe"])
def test_probe_endpoints_answer_as_the_probes_expect(pod: Pod, probe_name: str) -> None:
    """Each HTTP probe of the render answers 2xx/3xx (kubelet's success) on its path and port."""
    probe = pod.main_container.get(probe_name)
    if probe is None:
        assert probe_name == "startupProbe", f"the render's API container has no {probe_name}"
        return
    http_get = probe["httpGet"]
    scheme = http_get.get("scheme", "HTTP").lower()
    url = f"{scheme}://127.0.0.1:{http_get['port']}{http_get.get('path', '/')}"
    assert urlsplit(url).port == urlsplit(pod.url).port  # the probe follows the moved bind
    timeout = float(probe.get("timeoutSeconds", 1))
    response = httpx.get(url, timeout=timeout)
    assert 200 <= response.status_code < 400, response.text
