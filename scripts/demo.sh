#!/usr/bin/env bash
# make demo: run the demo pipeline steps as Kubernetes Jobs (one succeeds and logs a baseline
# profile of its training features, one fails with an exception, one is OOM-killed), send traffic
# with one feature shifted to the demo model API, and run a drift monitor that finds the shift
# (its report goes to the Pushgateway, and MLModelDriftDetected emails it).
#
# The Jobs are rendered with the values of the deployed release (its image tags, as make up set
# them), and created, never applied: each run has a fresh random suffix, and a name that exists
# already is an error instead of a silent reuse of the old Job and its result.
set -euo pipefail
cd "$(dirname "$0")/.."
MLOBS_SCRIPT="make demo"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WAIT_TIMEOUT=${MLOBS_DEMO_TIMEOUT:-300s}

# 10 hex digits: a collision is one in a trillion, and kubectl create would refuse it anyway.
suffix=$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')
[ ${#suffix} -eq 10 ] || die "could not read a random suffix from /dev/urandom"
values=$(mktemp "${TMPDIR:-/tmp}/mlobs-demo-values.XXXXXX")
trap 'rm -f "$values"' EXIT
helm get values "$RELEASE" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" --output yaml >"$values" \
  || die "cannot read the values of the release $RELEASE: run make up first"

echo "==> creating the demo Jobs (run suffix $suffix)"
helm template "$RELEASE" charts/mlobs --namespace "$NAMESPACE" --values "$values" \
  --set-string "mlobs-core.demo.runSuffix=$suffix" \
  --show-only charts/mlobs-core/templates/demo/jobs-demo.yaml \
  | kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" create -f -

echo "==> waiting for them (the failing ones are expected to fail)"
kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" wait --for=condition=complete --timeout="$WAIT_TIMEOUT" \
  "job/demo-train-$suffix" "job/demo-traffic-$suffix"
kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" wait --for=condition=failed --timeout="$WAIT_TIMEOUT" \
  "job/demo-diverge-$suffix" "job/demo-oom-$suffix"
echo "==> waiting for the drift monitor run (it checks the shifted traffic once its profiles are stored)"
kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" wait --for=condition=complete --timeout="$WAIT_TIMEOUT" \
  "job/demo-drift-$suffix"

grafana=$(url_of grafana)
cat <<MSG
==> done.  Look at:
    Grafana  $grafana/d/mlobs-pipeline-runs   (runs, failures by reason)
             $grafana/d/mlobs-run-view/?var-pipeline=demo-train&var-step=fit&var-run_id=demo-train-$suffix
             $grafana/d/mlobs-model-drift/?var-model=churn-logreg&var-version=1   (the shifted tenure_months)
    Mailpit  $(url_of mailpit)   (the failure emails of demo-diverge and demo-oom, and the drift email)
    The monitor's report: kubectl --context $KUBE_CONTEXT --namespace $NAMESPACE logs job/demo-drift-$suffix
MSG
