#!/usr/bin/env bash
# make down: delete the kind cluster of make up (and everything in it).
set -euo pipefail
CLUSTER=${CLUSTER:-mlobs}
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "make down: no kind cluster named $CLUSTER"
fi
