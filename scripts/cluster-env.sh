#!/usr/bin/env bash
# scripts/cluster-env.sh COMMAND...: run COMMAND with MLOBS_<COMPONENT>_URL set to the ports the
# kind cluster of make up maps on localhost (MLOBS_GRAFANA_URL, MLOBS_PROMETHEUS_URL, ...), so
# make e2e finds a stack started with MLOBS_*_PORT overrides.  A variable already set is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
MLOBS_SCRIPT=cluster-env
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

[ $# -gt 0 ] || die "usage: scripts/cluster-env.sh COMMAND..."
while read -r key _; do
  var="MLOBS_$(printf '%s' "$key" | tr '[:lower:]' '[:upper:]')_URL"
  [ -n "${!var:-}" ] || export "$var=$(url_of "$key")"
done <<<"$MLOBS_PORTS"
exec "$@"
