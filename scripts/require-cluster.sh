#!/usr/bin/env bash
# make demo / make e2e: fail within seconds, saying what to do, when there is no mlobs cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

fail() {
  echo "$1: run make up first" >&2
  exit 1
}

command -v kubectl >/dev/null 2>&1 || fail "kubectl is not installed, so there is no cluster to use"
has_line "$(kubectl config get-contexts -o name 2>/dev/null || true)" "$KUBE_CONTEXT" \
  || fail "no kubectl context $KUBE_CONTEXT (the kind cluster '$CLUSTER' that make up creates)"
kubectl --context "$KUBE_CONTEXT" --request-timeout=5s get namespace "$NAMESPACE" >/dev/null 2>&1 \
  || fail "the cluster behind context $KUBE_CONTEXT does not answer, or has no namespace $NAMESPACE"
