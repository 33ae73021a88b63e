# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# What make up, make demo and make e2e share: the host ports of the kind cluster and the mlobs
# images.  Sourced from the repository root; written for bash 3.2 too (macOS's /bin/bash).

CLUSTER=${CLUSTER:-mlobs}
NAMESPACE=${NAMESPACE:-mlobs}
RELEASE=mlobs              # charts/mlobs/values.yaml names Secrets after it
KUBE_CONTEXT="kind-$CLUSTER"
KIND_CONFIG=kind-config.yaml

die() { printf '%s: %s\n' "${MLOBS_SCRIPT:-mlobs}" "$*" >&2; exit 1; }

# has_line TEXT LINE: TEXT has a line that is exactly LINE.  (Not `cmd | grep -q`: with pipefail,
# grep's early exit can fail the pipeline through cmd's SIGPIPE.)
has_line() { case $'\n'"$1"$'\n' in *$'\n'"$2"$'\n'*) return 0 ;; *) return 1 ;; esac; }

# ---- host ports ---------------------------------------------------------------------------------
# One line per port that kind-config.yaml maps to localhost:
#   key  name  variable that overrides it  container port (the NodePort in charts/mlobs/values.yaml)
MLOBS_PORTS="grafana Grafana MLOBS_GRAFANA_PORT 30300
prometheus Prometheus MLOBS_PROMETHEUS_PORT 30090
alertmanager Alertmanager MLOBS_ALERTMANAGER_PORT 30903
mailpit Mailpit MLOBS_MAILPIT_PORT 30825
influxdb InfluxDB MLOBS_INFLUXDB_PORT 30086"

port_field() {  # port_field KEY N: field N (1-4) of KEY's line in MLOBS_PORTS
  printf '%s\n' "$MLOBS_PORTS" | awk -v k="$1" -v n="$2" '$1 == k { print $n }'
}

default_host_port() {  # default_host_port CONTAINER_PORT: its hostPort in kind-config.yaml
  sed -n "s/.*containerPort: *$1, *hostPort: *\([0-9][0-9]*\).*/\1/p" "$KIND_CONFIG"
}

host_port() {  # host_port KEY: the port the user asked for (its variable), else kind-config.yaml's
  local var value
  var=$(port_field "$1" 3)
  value=${!var:-}
  if [ -z "$value" ]; then
    value=$(default_host_port "$(port_field "$1" 4)")
    [ -n "$value" ] || die "$KIND_CONFIG maps no hostPort for containerPort $(port_field "$1" 4) ($1)"
  fi
  case $value in
    '' | *[!0-9]*) die "$var=$value is not a port number (1-65535)" ;;
  esac
  [ "$value" -ge 1 ] && [ "$value" -le 65535 ] || die "$var=$value is not a port number (1-65535)"
  printf '%s\n' "$value"
}

mapped_port() {  # mapped_port KEY: the host port the running cluster maps for KEY, or nothing
  docker port "$CLUSTER-control-plane" "$(port_field "$1" 4)/tcp" 2>/dev/null | sed -n 's/.*:\([0-9][0-9]*\)$/\1/p' | head -n 1
}

url_of() {  # url_of KEY: http://localhost:<port> of the running cluster (else of the variables)
  local port
  port=$(mapped_port "$1")
  [ -n "$port" ] || port=$(host_port "$1")
  printf 'http://localhost:%s\n' "$port"
}

# ---- images -------------------------------------------------------------------------------------
# One line per image make up builds (every Dockerfile of the repository; context: the root):
#   key (values: mlobs-core.images.<key>)  repository  Dockerfile
MLOBS_IMAGES="exporter mlobs/pipeline-exporter exporters/Dockerfile
fluentd mlobs/fluentd fluentd/Dockerfile
demo mlobs/demo demo/Dockerfile"

image_sources() {  # image_sources DOCKERFILE: the context paths its COPY and ADD lines read
  # Continuation lines are joined first; COPY --from=<stage> reads a stage, not the context.
  awk '/\\$/ { sub(/\\$/, ""); printf "%s", $0; next } { print }' "$1" | awk '
    toupper($1) == "COPY" || toupper($1) == "ADD" {
      n = 0
      for (i = 2; i <= NF; i++) {
        if ($i ~ /^--from=/) { n = -1; break }
        if ($i ~ /^--/) continue
        args[++n] = $i
      }
      for (i = 1; i < n; i++) print args[i]
      split("", args)
    }'
}

image_inputs() {  # image_inputs DOCKERFILE: every file the build reads, one per line, sorted
  local dockerfile=$1 src
  local -a sources=()
  while IFS= read -r src; do
    case $src in
      \[*) die "$dockerfile: a COPY/ADD in JSON form cannot be hashed; write it as COPY src... dest" ;;
      *'*'* | *'?'* | *'['*) die "$dockerfile: COPY/ADD source '$src' has a wildcard; name the paths instead" ;;
      *://*) die "$dockerfile: ADD of a URL ('$src') cannot be hashed; download it in a RUN step" ;;
    esac
    [ -e "$src" ] || die "$dockerfile: COPY/ADD source '$src' does not exist"
    sources+=("${src%/}")
  done < <(image_sources "$dockerfile")
  {
    printf '%s\n' "$dockerfile"
    [ ! -f .dockerignore ] || printf '%s\n' .dockerignore
    if [ ${#sources[@]} -gt 0 ]; then
      if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # tracked and untracked files, without what .gitignore leaves out (__pycache__ and such)
        git ls-files --cached --others --exclude-standard -- "${sources[@]}"
      else
        find "${sources[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
      fi
    fi
  } | while IFS= read -r f; do [ ! -f "$f" ] || printf '%s\n' "$f"; done | LC_ALL=C sort -u
}

image_tag() {  # image_tag DOCKERFILE: 12 hex digits of a hash over its inputs' paths and contents
  local files
  files=$(image_inputs "$1") || exit 1
  printf '%s\n' "$files" | git hash-object --stdin-paths | paste -d ' ' - <(printf '%s\n' "$files") \
    | git hash-object --stdin | cut -c 1-12
}
