#!/usr/bin/env bash
# make down: delete the kind cluster of make up (and everything in it).
set -euo pipefail
cd "$(dirname "$0")/.."
MLOBS_SCRIPT="make down"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
if has_line "$(kind get clusters 2>/dev/null || true)" "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "make down: no kind cluster named $CLUSTER"
fi
