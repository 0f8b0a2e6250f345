#!/usr/bin/env bash
# Runs the operator on a local, real kube-apiserver + etcd (../shared/envtest) with the examples
# applied and a demo tenant whose subscription runs out while you watch (compressed periods:
# warning and grace periods of 15 s), printing `kubectl get tenants,subscriptions` as time passes.
#
#   scripts/run-local.sh            # about 75 s, then everything is stopped
#   DEMO_SECONDS=300 scripts/run-local.sh
#   KEEP=1 scripts/run-local.sh     # leave the server and the operator running; prints how to reach them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

DEMO_SECONDS="${DEMO_SECONDS:-75}"
PERIOD="${PERIOD:-15s}"
export ENVTEST_RUN_DIR="${ENVTEST_RUN_DIR:-/tmp/mailsec-local}"

cargo build --quiet
BIN=target/debug/mailsec-operator

"$ENVTEST_SH" stop >/dev/null 2>&1 || true
eval "$("$ENVTEST_SH" start)"
operator_pid=""
cleanup() {
  [[ -n "$operator_pid" ]] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
  "$ENVTEST_SH" stop >/dev/null 2>&1 || true
}
if [[ "${KEEP:-0}" != 1 ]]; then trap cleanup EXIT; fi

"$BIN" crd | kubectl apply --server-side -f - >/dev/null
kubectl wait --for condition=established crd/tenants.mailsec.io crd/subscriptions.mailsec.io --timeout=30s >/dev/null
kubectl apply --server-side -f examples/ >/dev/null

# The demo: a tenant whose base subscription ends 35 s from now.
end="$(date -u -d '+35 seconds' +%Y-%m-%dT%H:%M:%SZ)"
kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: mailsec.io/v1alpha1
kind: Subscription
metadata: {name: demo-esg}
spec: {tenantRef: demo, product: email-safeguard, startDate: "2026-01-01", endDate: "$end", seats: 10}
---
apiVersion: mailsec.io/v1alpha1
kind: Tenant
metadata: {name: demo}
spec:
  displayName: Demo tenant (subscription ends at $end)
  users: 5
  admins: [{email: admin@demo.example}]
  services: [{product: email-safeguard, settings: {spamThreshold: 5}}]
YAML

# /metrics, /healthz and /readyz on a free loopback port (METRICS_ADDR to choose one).
METRICS_ADDR="${METRICS_ADDR:-127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
"$BIN" run --warning-period "$PERIOD" --grace-period "$PERIOD" --log-format text \
  --metrics-addr "$METRICS_ADDR" > "$ENVTEST_RUN_DIR/operator.log" 2>&1 &
operator_pid=$!
echo "operator running (pid $operator_pid, log $ENVTEST_RUN_DIR/operator.log); warning and grace periods: $PERIOD"
echo "metrics: curl -s http://$METRICS_ADDR/metrics | grep ^mailsec_   (health: /healthz, /readyz)"
echo "demo subscription ends at $end"

deadline=$((SECONDS + DEMO_SECONDS))
while ((SECONDS < deadline)); do
  echo; echo "=== $(date -u +%H:%M:%S) ==="
  kubectl get tenants,subscriptions
  sleep 10
done
echo; kubectl describe tenant demo | sed -n '/^Status:/,$p'

if [[ "${KEEP:-0}" == 1 ]]; then
  echo; echo "Left running. export KUBECONFIG=$KUBECONFIG; stop with: kill $operator_pid; $ENVTEST_SH stop"
fi
