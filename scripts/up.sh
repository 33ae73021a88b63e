#!/usr/bin/env bash
# make up: the whole mlobs stack on a local kind cluster.  Safe to run again: every step
# either finds its result in place or brings it up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-mlobs}
NAMESPACE=${NAMESPACE:-mlobs}
RELEASE=mlobs   # charts/mlobs/values.yaml names Secrets after it
KIND_MIN=${KIND_MIN:-0.30.0}
KUBECTL_MIN=${KUBECTL_MIN:-1.29.0}
HELM_MIN=${HELM_MIN:-3.14.0}
TIMEOUT=${TIMEOUT:-10m}

step=0
say() { step=$((step + 1)); printf '\n==> [%d] %s\n' "$step" "$*"; }
die() { printf 'make up: %s\n' "$*" >&2; exit 1; }

# version_at_least HAVE WANT: true when HAVE >= WANT (dotted numbers)
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

need() {  # need TOOL MIN VERSION_COMMAND HOW_TO_INSTALL
  local tool=$1 min=$2 cmd=$3 how=$4 have
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (need >= $min): $how"
  have=$(eval "$cmd" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 || true)
  [ -n "$have" ] || die "cannot read the version of $tool (need >= $min)"
  version_at_least "$have" "$min" || die "$tool $have is too old (need >= $min): $how"
  printf '    %-8s %s\n' "$tool" "$have"
}

say "checking prerequisites"
command -v docker >/dev/null 2>&1 || die "docker is not installed: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "the Docker engine is not running (docker info failed): start Docker and retry"
need kind "$KIND_MIN" "kind version" "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "$KUBECTL_MIN" "kubectl version --client" "https://kubernetes.io/docs/tasks/tools/"
need helm "$HELM_MIN" "helm version --short" "https://helm.sh/docs/intro/install/"

say "kind cluster '$CLUSTER'"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "    exists"
else
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

say "building and loading the images"
while read -r image dockerfile; do
  echo "    $image from $dockerfile"
  docker build --quiet -t "$image" -f "$dockerfile" . >/dev/null
  kind load docker-image "$image" --name "$CLUSTER" >/dev/null
done <<IMAGES
mlobs/pipeline-exporter:dev exporters/Dockerfile
mlobs/fluentd:dev fluentd/Dockerfile
mlobs/demo:dev demo/Dockerfile
IMAGES

say "chart dependencies (kube-prometheus-stack 88.5.3, influxdb2 2.1.2)"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm repo add influxdata https://helm.influxdata.com/ --force-update >/dev/null
helm dependency build charts/mlobs >/dev/null

say "installing the release '$RELEASE' in namespace '$NAMESPACE' (up to $TIMEOUT)"
helm upgrade --install "$RELEASE" charts/mlobs --namespace "$NAMESPACE" --create-namespace \
  --wait --timeout "$TIMEOUT"

say "ready"
password=$(kubectl -n "$NAMESPACE" get secret "$RELEASE-grafana-admin" -o jsonpath='{.data.admin-password}' | base64 -d)
cat <<MSG
    Grafana       http://localhost:3000   user admin, password: $password
                  (again: kubectl -n $NAMESPACE get secret $RELEASE-grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)
    Prometheus    http://localhost:9090
    Alertmanager  http://localhost:9093
    Mailpit       http://localhost:8025   (the alert emails)
    InfluxDB      http://localhost:8086   token: kubectl -n $NAMESPACE get secret $RELEASE-influxdb-auth -o jsonpath='{.data.admin-token}' | base64 -d

    Next: make demo, then make e2e.  make down deletes the cluster.
MSG
