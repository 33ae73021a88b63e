#!/usr/bin/env bash
# make demo / make e2e: fail within seconds, saying what to do, when there is no mlobs cluster.
set -euo pipefail
CLUSTER=${CLUSTER:-mlobs}
NAMESPACE=${NAMESPACE:-mlobs}
context="kind-$CLUSTER"

fail() {
  echo "$1: run make up first" >&2
  exit 1
}

command -v kubectl >/dev/null 2>&1 || fail "kubectl is not installed, so there is no cluster to use"
kubectl config get-contexts -o name 2>/dev/null | grep -qx "$context" \
  || fail "no kubectl context $context (the kind cluster '$CLUSTER' that make up creates)"
kubectl --context "$context" --request-timeout=5s get namespace "$NAMESPACE" >/dev/null 2>&1 \
  || fail "the cluster behind context $context does not answer, or has no namespace $NAMESPACE"
