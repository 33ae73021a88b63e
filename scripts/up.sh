#!/usr/bin/env bash
# make up: the whole mlobs stack on a local kind cluster.  Safe to run again: every phase finds
# its result in place or brings it up to date, and returns only when the stack answers.
#
#   1 preflight     tools and versions, Docker's memory, free host ports: nothing is created
#                   before all of them pass
#   2 cluster       kind create (once), with the host ports asked for
#   3 images        each tagged by a hash of its build inputs; built and loaded only when new,
#                   so an unchanged image keeps its tag and helm upgrade restarts nothing
#   4 dependencies  the pinned upstream charts, fetched only when missing; our chart repackaged
#   5 release       helm upgrade --install --wait
#   6 ready         Prometheus and Alertmanager rolled out, our rules loaded, Grafana answering
#
# scripts/up.sh --preflight (make preflight) runs phase 1 only.
# Variables: CLUSTER, NAMESPACE, TIMEOUT (helm's --timeout), the MLOBS_*_PORT of scripts/lib.sh,
# KIND_MIN and HELM_MIN (the Makefile's), MLOBS_MIN_DOCKER_MEMORY_MIB, and for the waits of
# phase 6 MLOBS_UP_READY_TIMEOUT (seconds) and MLOBS_UP_POLL_INTERVAL (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
MLOBS_SCRIPT="make up"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

KIND_MIN=${KIND_MIN:?KIND_MIN is unset: run make up}
HELM_MIN=${HELM_MIN:?HELM_MIN is unset: run make up}
TIMEOUT=${TIMEOUT:-10m}
# The release requests about 1.3 GiB and may use up to 4.4 GiB (its limits); kind's control plane
# takes about 0.7 GiB more, and a Docker VM set to 4 GiB reports a little less than that.
MIN_DOCKER_MEMORY_MIB=${MLOBS_MIN_DOCKER_MEMORY_MIB:-3500}
READY_TIMEOUT=${MLOBS_UP_READY_TIMEOUT:-600}
POLL_INTERVAL=${MLOBS_UP_POLL_INTERVAL:-2}
UMBRELLA=charts/mlobs
CORE=charts/mlobs-core
FULLNAME=mlobs   # kube-prometheus-stack.fullnameOverride in charts/mlobs/values.yaml
PROMETHEUS_STS="prometheus-$FULLNAME-prometheus"       # prometheus-operator: prometheus-<CR name>
ALERTMANAGER_STS="alertmanager-$FULLNAME-alertmanager" # and alertmanager-<CR name>

# ---- phases and their times -----------------------------------------------------------------------
PHASES=6 phase_no=0 phase_name="" phase_start=$SECONDS times=""
end_phase() {
  [ -n "$phase_name" ] || return 0
  local took=$((SECONDS - phase_start))
  printf '    (%s: %d s)\n' "$phase_name" "$took"
  times="$times$(printf '    %-13s %4d s' "$phase_name" "$took")"$'\n'
}
phase() {  # phase NAME DESCRIPTION
  end_phase
  phase_no=$((phase_no + 1)) phase_name=$1 phase_start=$SECONDS
  printf '\n==> [%d/%d] %s: %s\n' "$phase_no" "$PHASES" "$1" "$2"
}
kctl() { kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" "$@"; }

# ---- 1 preflight ------------------------------------------------------------------------------------
version_of() {  # version_of COMMAND...: the first x.y.z its output names
  "$@" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 || true
}
version_ge() {  # version_ge HAVE WANT: true when HAVE >= WANT (x.y.z, numerically)
  local IFS=.
  # shellcheck disable=SC2206  # splitting on dots is the point
  local -a h=($1) w=($2)
  local i
  for i in 0 1 2; do
    [ "${h[i]:-0}" -eq "${w[i]:-0}" ] || { [ "${h[i]:-0}" -gt "${w[i]:-0}" ]; return; }
  done
}
need_tool() {  # need_tool TOOL HOW_TO_INSTALL
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"
}
need_version() {  # need_version TOOL MIN HOW_TO_INSTALL VERSION_COMMAND...
  local tool=$1 min=$2 how=$3 have
  shift 3
  need_tool "$tool" "$how"
  have=$(version_of "$@")
  [ -n "$have" ] || die "cannot read the version of $tool from '$*' (need >= $min): $how"
  version_ge "$have" "$min" || die "$tool $have is too old (need >= $min): $how"
  printf '    %-8s %s\n' "$tool" "$have"
}
node_image() {  # the kind node image pinned in kind-config.yaml
  sed -n 's/^ *image: *\(kindest\/node:[^ ]*\).*/\1/p' "$KIND_CONFIG" | head -n 1
}
check_kubectl_skew() {  # kubectl must be within one minor version of the node's Kubernetes
  local image node major minor have kmajor kminor how
  image=$(node_image)
  node=$(printf '%s\n' "$image" | sed -n 's/^kindest\/node:v\([0-9]*\.[0-9]*\)\..*/\1/p')
  [ -n "$node" ] || die "cannot read the Kubernetes version of the node image '$image' in $KIND_CONFIG"
  major=${node%%.*} minor=${node#*.}
  how="install kubectl $node (kubectl is supported within one minor version of the cluster): https://kubernetes.io/docs/tasks/tools/"
  need_tool kubectl "$how"
  have=$(version_of kubectl version --client)
  [ -n "$have" ] || die "cannot read the version of kubectl from 'kubectl version --client': $how"
  kmajor=${have%%.*} kminor=${have#*.} kminor=${kminor%%.*}
  if [ "$kmajor" -ne "$major" ] || [ "$kminor" -lt $((minor - 1)) ] || [ "$kminor" -gt $((minor + 1)) ]; then
    die "kubectl $have is outside the supported skew of the cluster's Kubernetes $node ($image): $how"
  fi
  printf '    %-8s %s (the node runs Kubernetes %s)\n' kubectl "$have" "$node"
}
check_docker() {
  local mem mib
  need_tool docker "https://docs.docker.com/engine/install/"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed): start Docker and retry"
  mem=$(docker info --format '{{.MemTotal}}' 2>/dev/null || true)
  case $mem in '' | *[!0-9]*) die "cannot read Docker's memory (docker info --format '{{.MemTotal}}' said '$mem')" ;; esac
  mib=$((mem / 1048576))
  [ "$mib" -ge "$MIN_DOCKER_MEMORY_MIB" ] || die "Docker has $mib MiB of memory; mlobs needs at least $MIN_DOCKER_MEMORY_MIB MiB" \
    "(the release requests about 1.3 GiB and may use up to 4.4 GiB, plus about 0.7 GiB for kind):" \
    "give Docker 4 GiB or more (Docker Desktop: Settings > Resources > Memory; Colima: colima start --memory 4)," \
    "or set MLOBS_MIN_DOCKER_MEMORY_MIB to go ahead anyway"
  printf '    %-8s %d MiB of memory\n' docker "$mib"
}
port_holder() {  # port_holder PORT: "NAME (pid N)" of the process listening on PORT, when it can be told
  local holder=""
  if command -v ss >/dev/null 2>&1; then
    holder=$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\),.*/\1 (pid \2)/p' | head -n 1)
  fi
  if [ -z "$holder" ] && command -v lsof >/dev/null 2>&1; then
    holder=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN -Fpc 2>/dev/null | awk '/^p/ { p = substr($0, 2) } /^c/ { print substr($0, 2) " (pid " p ")"; exit }')
  fi
  printf '%s\n' "$holder"
}
port_taken() {  # port_taken PORT: something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
check_ports() {  # every host port free (a new cluster), or the ones the existing cluster maps
  local exists=$1 key name var port mapped holder seen=" "
  while read -r key name var _; do
    port=$(host_port "$key")
    case $seen in *" $port "*) die "port $port is asked for twice: give $var a port of its own" ;; esac
    seen="$seen$port "
    if [ "$exists" = yes ]; then
      mapped=$(mapped_port "$key")
      [ -n "$mapped" ] || die "the kind cluster '$CLUSTER' exists, but its node maps no port for $name:" \
        "is it stopped? docker start $CLUSTER-control-plane, or make down and make up again"
      [ "$mapped" = "$port" ] || die "the kind cluster '$CLUSTER' maps $name to port $mapped, not $port:" \
        "unset $var, or run make down and make up again to change the ports"
    elif port_taken "$port"; then
      holder=$(port_holder "$port")
      die "port $port ($name) is taken${holder:+ by $holder}: stop it, or choose another port," \
        "e.g. $var=$((port + 1)) make up (make demo and make e2e then find it by themselves)"
    fi
  done <<<"$MLOBS_PORTS"
  printf '    ports    %s\n' "$(printf '%s\n' "$MLOBS_PORTS" | while read -r key name _; do printf '%s %s  ' "$name" "$(host_port "$key")"; done)"
}

phase preflight "tools, Docker's memory, host ports"
need_tool git "https://git-scm.com/downloads"
need_tool curl "install curl with your package manager"
check_docker
need_version kind "$KIND_MIN" "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" kind version
check_kubectl_skew
need_version helm "$HELM_MIN" "https://helm.sh/docs/intro/install/" helm version --short
cluster_exists=no
if has_line "$(kind get clusters 2>/dev/null || true)" "$CLUSTER"; then cluster_exists=yes; fi
check_ports "$cluster_exists"
if [ "${1:-}" = --preflight ]; then
  end_phase
  echo "==> preflight passed: make up can start"
  exit 0
fi

# ---- 2 cluster ----------------------------------------------------------------------------------------
phase cluster "kind cluster '$CLUSTER'"
if [ "$cluster_exists" = yes ]; then
  echo "    exists"
  has_line "$(kubectl config get-contexts -o name 2>/dev/null || true)" "$KUBE_CONTEXT" \
    || kind export kubeconfig --name "$CLUSTER" >/dev/null
else
  config=$(mktemp "${TMPDIR:-/tmp}/mlobs-kind-config.XXXXXX")
  trap 'rm -f "$config"' EXIT
  cp "$KIND_CONFIG" "$config"
  while read -r key _ _ container; do
    sed "s/\(containerPort: *$container, *hostPort: *\)[0-9][0-9]*/\1$(host_port "$key")/" "$config" >"$config.new"
    mv "$config.new" "$config"
  done <<<"$MLOBS_PORTS"
  kind create cluster --name "$CLUSTER" --config "$config" --wait 180s
fi

# ---- 3 images -----------------------------------------------------------------------------------------
phase images "content-addressed tags, built and loaded when new"
# (The commands in the loops below read </dev/null: the loops' own input is the table.)
nodes=$(kind get nodes --name "$CLUSTER")
helm_images=()
while read -r key repository dockerfile; do
  tag=$(image_tag "$dockerfile")
  image="$repository:$tag"
  what=""
  if docker image inspect "$image" >/dev/null 2>&1; then
    what="built before"
  else
    started=$SECONDS
    echo "    building $image from $dockerfile"
    docker build --quiet --tag "$image" --file "$dockerfile" . </dev/null >/dev/null
    what="built ($((SECONDS - started)) s)"
  fi
  missing=""
  for node in $nodes; do
    docker exec "$node" crictl inspecti "$image" </dev/null >/dev/null 2>&1 || missing="$missing $node"
  done
  if [ -n "$missing" ]; then
    kind load docker-image "$image" --name "$CLUSTER" --nodes "$(printf '%s' "${missing# }" | tr ' ' ',')" </dev/null >/dev/null
    what="$what, loaded into the cluster"
  else
    what="$what, already in the cluster"
  fi
  printf '    %-9s %s: %s\n' "$key" "$image" "$what"
  helm_images+=(--set-string "mlobs-core.images.$key.repository=$repository"
    --set-string "mlobs-core.images.$key.tag=$tag")
done <<<"$MLOBS_IMAGES"

# ---- 4 dependencies -------------------------------------------------------------------------------------
phase dependencies "the pinned upstream charts and ours"
deps_in_place() {  # Helm's own view: every dependency of Chart.yaml at its version in charts/ ("ok")
  local listed
  listed=$(helm dependency list "$UMBRELLA" 2>&1) || return 1
  printf '%s\n' "$listed" | awk 'NR > 1 && NF >= 4 && $NF != "ok" { bad = 1 } /^WARNING/ { bad = 1 } END { exit bad }'
}
if ! deps_in_place; then
  sed -n 's/^ *repository: *\(https:[^ ]*\).*/\1/p' "$UMBRELLA/Chart.yaml" | while read -r url; do
    name=$(printf '%s' "$url" | sed 's|^https://||; s|/*$||; s|[^A-Za-z0-9]|-|g')
    helm repo add "$name" "$url" --force-update </dev/null >/dev/null
  done
  helm dependency update "$UMBRELLA" >/dev/null
  echo "    fetched the pinned charts of $UMBRELLA/Chart.yaml"
else
  echo "    the pinned charts are in place"
fi
# Our own chart is packaged afresh every time, so the release always has the templates of the tree.
helm package "$CORE" --destination "$UMBRELLA/charts" >/dev/null
echo "    packaged $CORE"

# ---- 5 release --------------------------------------------------------------------------------------------
phase release "helm upgrade --install $RELEASE in namespace $NAMESPACE (up to $TIMEOUT)"
# A StatefulSet's serviceName cannot change in place, and Fluentd's moved to a headless Service of
# its own: one made before that is deleted with --cascade=orphan, so that Helm creates it again
# and it adopts the running pod, which keeps running.
fluentd_service=$(kctl get statefulset "$RELEASE-fluentd" -o 'jsonpath={.spec.serviceName}' 2>/dev/null || true)
if [ -n "$fluentd_service" ] && [ "$fluentd_service" != "$RELEASE-fluentd-headless" ]; then
  kctl delete statefulset "$RELEASE-fluentd" --cascade=orphan >/dev/null
  echo "    statefulset/$RELEASE-fluentd: recreated for its headless Service (the pod keeps running)"
fi
helm upgrade --install "$RELEASE" "$UMBRELLA" --kube-context "$KUBE_CONTEXT" \
  --namespace "$NAMESPACE" --create-namespace --wait --timeout "$TIMEOUT" \
  "${helm_images[@]}" \
  --set-string "mlobs-core.alerting.grafanaUrl=http://localhost:$(host_port grafana)" >/dev/null
echo "    deployed; an unchanged image tag left its workload running"

# ---- 6 ready ------------------------------------------------------------------------------------------------
phase ready "Prometheus, Alertmanager, our rules, Grafana (up to $READY_TIMEOUT s)"
deadline=$((SECONDS + READY_TIMEOUT))
remaining() { local r=$((deadline - SECONDS)); [ "$r" -gt 0 ] || r=1; printf '%s\n' "$r"; }
wait_until() {  # wait_until WHAT HINT COMMAND...: poll COMMAND until it succeeds or the deadline passes
  local what=$1 hint=$2 said=$SECONDS
  shift 2
  echo "    waiting for $what"
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what: not within $READY_TIMEOUT s. $hint"
    if [ $((SECONDS - said)) -ge 15 ]; then
      echo "    ... still waiting for $what ($((SECONDS - phase_start)) s)"
      said=$SECONDS
    fi
    sleep "$POLL_INTERVAL"
  done
}
statefulset_exists() { kctl get statefulset "$1" -o name >/dev/null 2>&1; }
rollout() {  # rollout STATEFULSET NAME: the operator creates it after helm returns, then it rolls out
  wait_until "$2's StatefulSet $1" "See: kubectl -n $NAMESPACE logs deploy/$FULLNAME-operator" statefulset_exists "$1"
  kctl rollout status "statefulset/$1" --timeout "$(remaining)s" >/dev/null \
    || die "$2 did not become ready. See: kubectl -n $NAMESPACE describe statefulset $1"
  echo "    $2 is ready"
}
rule_groups=$(sed -n 's/^  - name: *//p' alerting/*-rules.yaml)
prometheus_url="http://127.0.0.1:$(host_port prometheus)"
grafana_url="http://127.0.0.1:$(host_port grafana)"
rules_loaded() {
  local body group
  body=$(curl -fsS --max-time 5 "$prometheus_url/api/v1/rules" 2>/dev/null) || return 1
  for group in $rule_groups; do
    case $body in *"\"name\":\"$group\""*) ;; *) return 1 ;; esac
  done
}
grafana_answers() {
  local body
  body=$(curl -fsS --max-time 5 "$grafana_url/api/health" 2>/dev/null) || return 1
  printf '%s\n' "$body" | grep '"database": *"ok"' >/dev/null
}
rollout "$PROMETHEUS_STS" Prometheus
rollout "$ALERTMANAGER_STS" Alertmanager
wait_until "Prometheus to load the rule groups $(printf '%s' "$rule_groups" | tr '\n' ' ')" \
  "See: kubectl -n $NAMESPACE get prometheusrules; $prometheus_url/rules" rules_loaded
echo "    the rules are loaded"
wait_until "Grafana at $grafana_url/api/health" "See: kubectl -n $NAMESPACE logs deploy/$FULLNAME-grafana" grafana_answers
echo "    Grafana answers"
end_phase

password=$(kctl get secret "$RELEASE-grafana-admin" -o jsonpath='{.data.admin-password}' | base64 -d)
cat <<MSG

==> ready in $SECONDS s
$times
    Grafana       http://localhost:$(host_port grafana)   user admin, password: $password
                  (again: kubectl -n $NAMESPACE get secret $RELEASE-grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d)
    Prometheus    http://localhost:$(host_port prometheus)
    Alertmanager  http://localhost:$(host_port alertmanager)
    Mailpit       http://localhost:$(host_port mailpit)   (the alert emails)
    InfluxDB      http://localhost:$(host_port influxdb)   token: kubectl -n $NAMESPACE get secret $RELEASE-influxdb-auth -o jsonpath='{.data.admin-token}' | base64 -d

    Next: make demo, then make e2e.  make down deletes the cluster.
MSG
