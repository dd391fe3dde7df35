"""Properties of the rendered Kubernetes overlays (the checks of kube-linter and kube-score)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings import is_known_setting
from tests.deploy.tools import REPO, run_tool

# The oldest version the README supports (preStop.sleep is beta from 1.30) and a current one.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
GUNICORN_GRACEFUL_TIMEOUT_DEFAULT = 20

Manifest = dict[str, Any]
Render = Callable[[str], list[Manifest]]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}"
    return matches[0]


def pod_template(workload: Manifest) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def workloads(manifests: list[Manifest], kinds: set[str] = WORKLOAD_KINDS) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in kinds]


def containers(
    manifests: list[Manifest], kinds: set[str] = WORKLOAD_KINDS, *, init: bool = True
) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for workload in workloads(manifests, kinds):
        spec = pod_template(workload)["spec"]
        for container in (spec.get("initContainers", []) if init else []) + spec["containers"]:
            yield workload, container


def api(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "Deployment", "kvkit-api")


def api_container(manifests: list[Manifest]) -> dict[str, Any]:
    container: dict[str, Any] = pod_template(api(manifests))["spec"]["containers"][0]
    return container


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def container_env(manifests: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container sees: its ConfigMaps and Secrets, then its own env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_strict_schema_validation(
    manifests: list[Manifest], tmp_path: Path, version: str
) -> None:
    """Every rendered object is valid, with no unknown fields, from the oldest supported
    Kubernetes version on."""
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(manifests))
    result = run_tool("kubernetes-validate", "--strict", "--quiet", "-k", version, str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_minimum_kubernetes_version_is_stated_where_users_read() -> None:
    """preStop.sleep and unhealthyPodEvictionPolicy need 1.30: the README and the base say so."""
    assert "Kubernetes 1.30" in (REPO / "README.md").read_text()
    assert "Kubernetes 1.30" in (REPO / "k8s/base/kustomization.yaml").read_text()


def test_long_running_containers_have_liveness_and_readiness_probes(
    manifests: list[Manifest],
) -> None:
    """Every long-running container declares both probes, and they differ (initContainers run
    to completion and take no probes)."""
    for workload, container in containers(manifests, LONG_RUNNING_KINDS, init=False):
        where = f"{workload['metadata']['name']}/{container['name']}"
        assert "livenessProbe" in container, where
        assert "readinessProbe" in container, where
        assert container["livenessProbe"] != container["readinessProbe"], where


def test_api_liveness_probe_never_checks_the_database(manifests: list[Manifest]) -> None:
    """The API's liveness probe asks /healthz, never the DB-backed /readyz."""
    assert api_container(manifests)["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_api_readiness_probe_checks_readyz(manifests: list[Manifest]) -> None:
    """The API leaves the Service while /readyz reports its database unreachable."""
    assert api_container(manifests)["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_api_startup_probe_does_not_check_the_database(manifests: list[Manifest]) -> None:
    """A slow start is covered by a startup probe on /healthz, not by a long liveness delay."""
    assert api_container(manifests)["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_probes_use_a_declared_container_port(manifests: list[Manifest]) -> None:
    """Named probe ports refer to a port the container declares."""
    for _, container in containers(manifests):
        port_names = {p.get("name") for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get(
                "tcpSocket"
            )
            if action and isinstance(action["port"], str):
                assert action["port"] in port_names, f"{container['name']} {probe}"


def test_every_container_sets_cpu_and_memory_requests_and_limits(
    manifests: list[Manifest],
) -> None:
    """No container runs without CPU and memory requests and limits."""
    for _, container in containers(manifests):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), f"{container['name']} {bound}"


def test_every_pod_runs_as_non_root(manifests: list[Manifest]) -> None:
    """Every pod refuses to start as root."""
    for workload in workloads(manifests):
        context = pod_template(workload)["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert context["runAsUser"] > 0, workload["metadata"]["name"]


def test_kvkit_containers_run_with_uid_and_gid_of_10001_or_more(manifests: list[Manifest]) -> None:
    """kvkit's own containers use a UID/GID that cannot collide with a host user."""
    for workload in workloads(manifests):
        spec = pod_template(workload)["spec"]
        for container in spec["containers"]:
            if container["image"].split(":")[0] != "kvkit":
                continue
            context = {**spec["securityContext"], **container.get("securityContext", {})}
            assert context["runAsUser"] >= 10001, container["name"]
            assert context["runAsGroup"] >= 10001, container["name"]


def test_every_container_has_a_read_only_root_filesystem(manifests: list[Manifest]) -> None:
    """No container can write to its image's filesystem."""
    for _, container in containers(manifests):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]


def test_no_container_allows_privilege_escalation(manifests: list[Manifest]) -> None:
    """setuid binaries cannot raise any container's privileges."""
    for _, container in containers(manifests):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, container["name"]


def test_every_container_drops_all_capabilities(manifests: list[Manifest]) -> None:
    """Containers start with no Linux capabilities."""
    for _, container in containers(manifests):
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], container["name"]


def test_every_pod_uses_the_runtime_default_seccomp_profile(manifests: list[Manifest]) -> None:
    """System calls are filtered by the runtime's default seccomp profile."""
    for workload in workloads(manifests):
        context = pod_template(workload)["spec"]["securityContext"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault", workload["metadata"]["name"]


def test_namespace_enforces_the_restricted_pod_security_standard(kustomize: Render) -> None:
    """The namespace rejects pods that do not meet the restricted standard."""
    (namespace,) = of_kind(kustomize("namespace"), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_overlay_deletes_the_namespace_or_a_hand_made_secret(manifests: list[Manifest]) -> None:
    """`kubectl delete -k` deletes what the overlay renders: never the namespace (and with it
    every Secret made there by hand), and no Secret but the one generated under a hashed name."""
    assert not of_kind(manifests, "Namespace")
    for secret in of_kind(manifests, "Secret"):
        base, _, suffix = secret["metadata"]["name"].rpartition("-")
        assert base and len(suffix) == 10 and suffix.isalnum(), secret["metadata"]["name"]


def test_a_changed_secret_rolls_the_api_pods(kustomize: Render, tmp_path: Path) -> None:
    """The pods name their Secret by a hash of its contents: changing a value changes the pod
    template, so the Deployment rolls."""
    from tests.deploy.conftest import user_copy_of_k8s

    tree = user_copy_of_k8s(tmp_path)
    secrets = tree / "overlays/prod/secrets.env"
    secrets.write_text(secrets.read_text().replace("change-me-to-a-long-random-key-2", "k" * 32))
    result = run_tool("kubectl", "kustomize", str(tree / "overlays/prod"))
    assert result.returncode == 0, result.stderr
    changed = api([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    before = api(kustomize("overlays/prod"))
    assert pod_template(changed) != pod_template(before)
    assert changed["metadata"]["name"] == before["metadata"]["name"]


def readme_apply_steps() -> list[str]:
    """The kustomizations the README's Kubernetes section applies, in order."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^\s*kubectl apply -k (k8s/\S+)", text, flags=re.MULTILINE)


@pytest.mark.parametrize("overlay_name", ["dev", "prod"])
def test_following_the_readme_on_an_empty_cluster_applies(
    kustomize: Render, overlay_name: str
) -> None:
    """Each step of the README, applied in order to an empty cluster, finds everything it needs:
    its namespace exists (made by an earlier step or the same one) and every ConfigMap and
    Secret a pod reads is in the same step, so nothing has to be made by hand first."""
    steps = [
        step for step in readme_apply_steps() if "overlays" not in step or overlay_name in step
    ]
    assert steps.index("k8s/namespace") < steps.index(f"k8s/overlays/{overlay_name}"), steps
    namespaces: set[str] = set()
    for step in steps:
        rendered = kustomize(step.removeprefix("k8s/"))
        namespaces |= {m["metadata"]["name"] for m in of_kind(rendered, "Namespace")}
        present = {(m["kind"], m["metadata"]["name"]) for m in rendered}
        for manifest in rendered:
            if manifest["kind"] != "Namespace":
                assert manifest["metadata"].get("namespace") in namespaces, (step, manifest)
        for _, container in containers(rendered):
            for source in container.get("envFrom", []):
                kind, ref = next(iter(source.items()))
                wanted = ("ConfigMap" if kind == "configMapRef" else "Secret", ref["name"])
                assert wanted in present, (step, wanted)


def test_the_autoscaler_alone_owns_the_replica_count(manifests: list[Manifest]) -> None:
    """A Deployment an HPA scales has no spec.replicas, so `kubectl apply` never snaps a
    scaled-out Deployment back to a fixed count."""
    for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert "replicas" not in named(manifests, target["kind"], target["name"])["spec"]


def test_every_image_is_pinned_to_a_version_tag(manifests: list[Manifest]) -> None:
    """Images name an explicit tag or digest, never latest."""
    for _, container in containers(manifests):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and tag and tag != "latest" and "/" not in tag), image


def test_pods_do_not_mount_a_service_account_token(manifests: list[Manifest]) -> None:
    """No pod gets Kubernetes API credentials it has no use for."""
    for workload in workloads(manifests):
        spec = pod_template(workload)["spec"]
        assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]


def test_every_service_account_used_by_a_pod_exists(manifests: list[Manifest]) -> None:
    """Pods never refer to a ServiceAccount the overlay does not create."""
    accounts = {m["metadata"]["name"] for m in of_kind(manifests, "ServiceAccount")}
    for workload in workloads(manifests):
        assert pod_template(workload)["spec"].get("serviceAccountName", "default") in (
            accounts | {"default"}
        )


def test_api_and_migration_do_not_use_the_default_service_account(
    manifests: list[Manifest],
) -> None:
    """kvkit's own pods run under their own ServiceAccount."""
    for name in ("kvkit-api", "kvkit-purge-idempotency"):
        workload = next(m for m in workloads(manifests) if m["metadata"]["name"] == name)
        assert pod_template(workload)["spec"]["serviceAccountName"] == "kvkit"


def test_pdb_selects_exactly_the_api_pods(manifests: list[Manifest]) -> None:
    """The PodDisruptionBudget's selector is the Deployment's selector."""
    (pdb,) = of_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == api(manifests)["spec"]["selector"]


def test_pdb_allows_one_pod_to_be_evicted(manifests: list[Manifest]) -> None:
    """Node drains can always proceed, whatever the replica count, and unready pods never
    block them."""
    (pdb,) = of_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_every_service_selects_pods_of_some_workload(manifests: list[Manifest]) -> None:
    """No Service is left without pods to route to."""
    pod_labels = [pod_template(w)["metadata"]["labels"] for w in workloads(manifests)]
    for service in of_kind(manifests, "Service"):
        selector = service["spec"]["selector"]
        assert any(matches(selector, labels) for labels in pod_labels), service["metadata"]["name"]


def test_api_service_selects_the_api_pods_only(manifests: list[Manifest]) -> None:
    """The kvkit Service routes to API pods, never to database or migration pods."""
    selector = named(manifests, "Service", "kvkit")["spec"]["selector"]
    for workload in workloads(manifests):
        selected = matches(selector, pod_template(workload)["metadata"]["labels"])
        assert selected == (workload["metadata"]["name"] == "kvkit-api"), workload["metadata"]


def test_service_target_ports_name_container_ports(manifests: list[Manifest]) -> None:
    """Each Service's targetPort is a port the selected containers declare."""
    for service in of_kind(manifests, "Service"):
        for workload in workloads(manifests):
            template = pod_template(workload)
            if not matches(service["spec"]["selector"], template["metadata"]["labels"]):
                continue
            declared = {
                p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in declared, service["metadata"]["name"]


def api_policy(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "NetworkPolicy", "kvkit-api")


def test_every_pod_is_isolated_by_a_network_policy(manifests: list[Manifest]) -> None:
    """No pod accepts or opens connections that no NetworkPolicy allows."""
    policies = of_kind(manifests, "NetworkPolicy")
    for workload in workloads(manifests):
        labels = pod_template(workload)["metadata"]["labels"]
        selecting = [
            p for p in policies if matches(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert selecting, workload["metadata"]["name"]
        for policy in selecting:
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_network_policy_selects_the_api_pods(manifests: list[Manifest]) -> None:
    """The kvkit-api NetworkPolicy applies to the API pods."""
    policy = api_policy(manifests)
    labels = pod_template(api(manifests))["metadata"]["labels"]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def egress_ports(manifests: list[Manifest]) -> set[tuple[str, int]]:
    policy = api_policy(manifests)
    return {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}


def test_network_policy_allows_dns_egress_over_udp_and_tcp(manifests: list[Manifest]) -> None:
    """Name lookups work, including DNS answers too large for UDP."""
    assert {("UDP", 53), ("TCP", 53)} <= egress_ports(manifests)


def test_network_policy_allows_database_redis_and_otlp_egress(manifests: list[Manifest]) -> None:
    """The API can reach PostgreSQL, Redis and the OpenTelemetry collector."""
    assert {("TCP", 5432), ("TCP", 6379), ("TCP", 4317), ("TCP", 4318)} <= egress_ports(manifests)


def test_network_policy_admits_the_api_port_and_metrics_only_from_prometheus(
    manifests: list[Manifest],
) -> None:
    """Anyone may reach the API port; the metrics port only Prometheus pods; nothing else."""
    policy = api_policy(manifests)
    ports = {p["name"]: p["containerPort"] for p in api_container(manifests)["ports"]}
    rules = {
        rule_port["port"]: rule.get("from")
        for rule in policy["spec"]["ingress"]
        for rule_port in rule["ports"]
    }
    assert set(rules) == {ports["http"], ports["metrics"]}
    assert rules[ports["http"]] is None  # open to clients and the ingress controller
    [peer] = rules[ports["metrics"]]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_the_metrics_port_is_the_one_the_app_serves_metrics_on(manifests: list[Manifest]) -> None:
    """KV_METRICS_PORT is set, equals the container's metrics port, and is what the metrics
    Service (and so Prometheus) targets."""
    container = api_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_env(manifests, container)["KV_METRICS_PORT"] == str(ports["metrics"])
    [service] = [
        m for m in manifests if m["kind"] == "Service" and m["metadata"]["name"] == "kvkit-metrics"
    ]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]


def test_grace_period_outlasts_prestop_and_gunicorn_graceful_timeout(
    manifests: list[Manifest],
) -> None:
    """Kubernetes never SIGKILLs gunicorn while it is still draining requests."""
    container = api_container(manifests)
    graceful = int(
        container_env(manifests, container).get(
            "GUNICORN_GRACEFUL_TIMEOUT", GUNICORN_GRACEFUL_TIMEOUT_DEFAULT
        )
    )
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_template(api(manifests))["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + graceful


def test_prestop_needs_no_shell_in_the_image(manifests: list[Manifest]) -> None:
    """preStop uses the kubelet's sleep action, not a sleep binary the image may lack."""
    assert set(api_container(manifests)["lifecycle"]["preStop"]) == {"sleep"}


def test_rolling_update_never_drops_below_desired_replicas(manifests: list[Manifest]) -> None:
    """New pods must be ready before old ones go (maxUnavailable 0)."""
    strategy = api(manifests)["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_tmp_and_metrics_dir_are_emptydir_mounts(manifests: list[Manifest]) -> None:
    """With a read-only root, /tmp and the multiprocess metrics dir are writable emptyDirs."""
    container = api_container(manifests)
    metrics_dir = container_env(manifests, container)["PROMETHEUS_MULTIPROC_DIR"]
    volumes = {v["name"]: v for v in pod_template(api(manifests))["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    for path in ("/tmp", metrics_dir):
        assert "emptyDir" in mounts[path], path
        assert mounts[path]["emptyDir"]["sizeLimit"], path


def test_pods_spread_across_nodes_and_zones(manifests: list[Manifest]) -> None:
    """API pods are spread over hosts and zones, selecting their own labels."""
    template = pod_template(api(manifests))
    constraints = template["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in constraints:
        assert matches(constraint["labelSelector"]["matchLabels"], template["metadata"]["labels"])


def test_prometheus_annotations_point_at_the_metrics_route(manifests: list[Manifest]) -> None:
    """Annotation-based scrapers find /metrics on the container's metrics port."""
    annotations = pod_template(api(manifests))["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in api_container(manifests)["ports"]}
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_config_and_secret_references_resolve(manifests: list[Manifest]) -> None:
    """Every ConfigMap and Secret a container reads is rendered by the overlay."""
    rendered = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for _, container in containers(manifests):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in rendered
            else:
                assert ("Secret", source["secretRef"]["name"]) in rendered


def test_api_environment_names_only_known_settings(manifests: list[Manifest]) -> None:
    """Every variable given to the API is one the app or gunicorn reads: no typos, no leftovers."""
    container = api_container(manifests)
    names = set(container_env(manifests, container))
    for secret in of_kind(manifests, "Secret"):
        if secret["metadata"]["name"].startswith("kvkit-secrets"):
            names |= set(secret["data"])
    assert not {name for name in names if not is_known_setting(name)}


def test_secrets_are_not_in_the_config_map(manifests: list[Manifest]) -> None:
    """Credentials travel only in Secrets, never in the ConfigMap."""
    for config in of_kind(manifests, "ConfigMap"):
        assert not {"DATABASE_URL", "REDIS_URL", "KV_API_KEYS"} & set(config["data"])


def test_api_pods_migrate_before_they_serve(manifests: list[Manifest]) -> None:
    """Every new API pod runs migrate in an initContainer, with the API's image, settings and
    secrets, before its server starts: no pod serves before its schema exists, and there is no
    Job whose immutable template a later apply would trip over."""
    spec = pod_template(api(manifests))["spec"]
    (init,) = spec["initContainers"]
    server = spec["containers"][0]
    assert init["command"] == ["python", "-m", "app", "migrate"]
    assert init["image"] == server["image"]
    assert init["envFrom"] == server["envFrom"]
    assert init["securityContext"] == server["securityContext"]
    assert not of_kind(manifests, "Job")


def test_expired_idempotency_records_are_purged_hourly(manifests: list[Manifest]) -> None:
    """A CronJob runs purge-idempotency with the API's image and settings, one at a time, with
    a deadline for a missed start, bounded resources and the API's security context."""
    cron = named(manifests, "CronJob", "kvkit-purge-idempotency")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["spec"]["startingDeadlineSeconds"] <= 3600
    (container,) = pod_template(cron)["spec"]["containers"]
    server = api_container(manifests)
    assert container["command"] == ["python", "-m", "app", "purge-idempotency"]
    assert container["image"] == server["image"]
    assert container["envFrom"] == server["envFrom"]
    assert container["securityContext"] == server["securityContext"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    job = cron["spec"]["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] < 3600  # over before the next hourly run is due


def egress_rules(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for policy in of_kind(manifests, "NetworkPolicy"):
        if policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "kvkit":
            for rule in policy["spec"].get("egress", []):
                yield policy["metadata"]["name"], rule


def test_dns_egress_goes_to_the_cluster_dns_only(manifests: list[Manifest]) -> None:
    """Port 53 is open towards kube-dns, not towards any resolver an attacker may run."""
    for name, rule in egress_rules(manifests):
        if any(port["port"] == 53 for port in rule["ports"]):
            (peer,) = rule["to"]
            assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}, name


def test_dev_egress_reaches_only_its_database_redis_and_collector(kustomize: Render) -> None:
    """In development every egress rule names its peers: kvkit's pods reach this overlay's
    PostgreSQL and Redis pods and a collector, no other address on those ports."""
    manifests = kustomize("overlays/dev")
    peers: dict[int, set[str]] = {}
    for name, rule in egress_rules(manifests):
        assert rule.get("to"), f"{name}: an egress rule open to any address"
        for port in rule["ports"]:
            for peer in rule["to"]:
                assert "ipBlock" not in peer, name
                labels = peer["podSelector"]["matchLabels"]
                peers.setdefault(port["port"], set()).add(labels.get("app.kubernetes.io/name", ""))
    assert peers[5432] == {"postgres"} and peers[6379] == {"redis"}
    assert peers[4318] == {"opentelemetry-collector"}
    pods = {
        m["metadata"]["name"]: pod_template(m)["metadata"]["labels"] for m in workloads(manifests)
    }
    assert pods["postgres"]["app.kubernetes.io/name"] == "postgres"


def test_prod_autoscaler_targets_the_api_deployment(kustomize: Render) -> None:
    """The production HPA scales the API Deployment and never below three pods."""
    manifests = kustomize("overlays/prod")
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api(manifests)["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_prod_runs_no_database_in_the_cluster(kustomize: Render) -> None:
    """Production relies on managed PostgreSQL and Redis, not StatefulSets."""
    assert not of_kind(kustomize("overlays/prod"), "StatefulSet")


def test_dev_runs_one_api_replica_without_an_autoscaler(kustomize: Render) -> None:
    """Development runs a single API pod that no HPA rescales."""
    manifests = kustomize("overlays/dev")
    assert api(manifests)["spec"]["replicas"] == 1  # no HPA here to own the count
    assert not of_kind(manifests, "HorizontalPodAutoscaler")


def test_dev_runs_postgres_and_redis_behind_the_names_in_its_urls(kustomize: Render) -> None:
    """Development's DATABASE_URL and REDIS_URL hosts are in-cluster Services."""
    secrets = (REPO / "k8s/overlays/dev/secrets.env").read_text()
    services = {m["metadata"]["name"] for m in of_kind(kustomize("overlays/dev"), "Service")}
    assert "@postgres:5432/" in secrets and "redis://redis:6379/" in secrets
    assert {"postgres", "redis"} <= services
    stateful = {m["metadata"]["name"] for m in of_kind(kustomize("overlays/dev"), "StatefulSet")}
    assert stateful == {"postgres", "redis"}


def test_servicemonitor_selects_only_the_metrics_service(kustomize: Render) -> None:
    """The optional ServiceMonitor scrapes each pod once, on its metrics port, through the
    headless kvkit-metrics Service."""
    (monitor,) = kustomize("optional/servicemonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(kustomize("overlays/prod"), "Service")
    selected = [s for s in services if matches(selector, s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == ["kvkit-metrics"]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("path", ["overlays/dev", "overlays/prod"])
def test_overlays_do_not_include_the_optional_servicemonitor(kustomize: Render, path: str) -> None:
    """Overlays apply on clusters without the Prometheus Operator's CRDs."""
    assert not of_kind(kustomize(path), "ServiceMonitor")
