#!/usr/bin/env bash
# make demo: run the demo pipeline steps as Kubernetes Jobs (one succeeds, one fails with an
# exception, one is OOM-killed) and send traffic to the demo model API.
set -euo pipefail
cd "$(dirname "$0")/.."
NAMESPACE=${NAMESPACE:-mlobs}
suffix=$(date +%H%M%S)

echo "==> creating the demo Jobs (run suffix $suffix)"
helm template mlobs charts/mlobs --namespace "$NAMESPACE" \
  --set "mlobs-core.demo.runSuffix=$suffix" \
  --show-only charts/mlobs-core/templates/demo/jobs-demo.yaml \
  | kubectl apply --namespace "$NAMESPACE" -f -

echo "==> waiting for them (the failing ones are expected to fail)"
kubectl -n "$NAMESPACE" wait --for=condition=complete --timeout=300s "job/demo-train-$suffix" "job/demo-traffic-$suffix"
kubectl -n "$NAMESPACE" wait --for=condition=failed --timeout=300s "job/demo-diverge-$suffix" "job/demo-oom-$suffix"

cat <<MSG
==> done.  Look at:
    Grafana  http://localhost:3000/d/mlobs-pipeline-runs   (runs, failures by reason)
             http://localhost:3000/d/mlobs-run-view/?var-pipeline=demo-train&var-step=fit&var-run_id=demo-train-$suffix
    Mailpit  http://localhost:8025   (the failure emails of demo-diverge and demo-oom)
MSG
