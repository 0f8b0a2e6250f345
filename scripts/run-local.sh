#!/usr/bin/env bash
# Runs the operator on a local, real kube-apiserver + etcd (../shared/envtest) with examples/
# applied, plus a demo tenant whose subscription ends 10 days from today, and prints
# `kubectl get tenants,subscriptions` as time passes. Two modes, announced at the start:
#
#   scripts/run-local.sh               # REAL TIME: the real policy (30-day warning and grace
#                                      # periods) at the real date: the examples as the operator
#                                      # sees them today. Nothing moves within the demo's minute.
#   scripts/run-local.sh --time-lapse  # TIME LAPSE: the operator's clock starts now and runs one
#                                      # day per second (same 30-day periods): within a minute the
#                                      # examples and the demo tenant go through warning,
#                                      # read-only and suspension, and a renewal brings one back.
#
#   DEMO_SECONDS=300 scripts/run-local.sh --time-lapse   # run longer (default: 20 s real, 70 s lapse)
#   TIME_LAPSE_FROM=2026-12-01 TIME_LAPSE_SPEED=43200 scripts/run-local.sh --time-lapse
#   KEEP=1 scripts/run-local.sh        # leave the server and the operator running; prints how to reach them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=real
for arg in "$@"; do
  case "$arg" in
    --time-lapse) MODE=lapse ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run-local.sh: unknown argument $arg (try --time-lapse or --help)" >&2; exit 2 ;;
  esac
done

source scripts/setup.sh

TIME_LAPSE_FROM="${TIME_LAPSE_FROM:-now}"
TIME_LAPSE_SPEED="${TIME_LAPSE_SPEED:-86400}"
if [[ $MODE == lapse ]]; then DEMO_SECONDS="${DEMO_SECONDS:-70}"; else DEMO_SECONDS="${DEMO_SECONDS:-20}"; fi
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
# The platform assigns each tenant the workload namespaces it lists (a Tenant editor can not):
# the operator writes settings and scales workloads only there.
kubectl get tenants -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.workloadNamespaces[*]}{"\n"}{end}' |
  while read -r tenant namespaces; do
    for ns in $namespaces; do
      kubectl create namespace "$ns" >/dev/null 2>&1 || true
      kubectl label namespace "$ns" "mailsec.io/tenant=$tenant" --overwrite >/dev/null
    done
  done

# The demo: a tenant whose base subscription ends 10 days from today (UTC), a bare endDate as
# customers write it.
end="$(date -u -d '+10 days' +%Y-%m-%d)"
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
  displayName: Demo tenant (subscription until the end of $end, UTC)
  users: 5
  admins: [{email: admin@demo.example}]
  services: [{product: email-safeguard, settings: {spamThreshold: 5}}]
YAML

# /metrics, /healthz and /readyz on a free loopback port (METRICS_ADDR to choose one).
METRICS_ADDR="${METRICS_ADDR:-127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
lapse_args=()
if [[ $MODE == lapse ]]; then
  lapse_args=(--time-lapse-from "$TIME_LAPSE_FROM" --time-lapse-speed "$TIME_LAPSE_SPEED")
fi
"$BIN" run "${lapse_args[@]}" --log-format text --metrics-addr "$METRICS_ADDR" \
  > "$ENVTEST_RUN_DIR/operator.log" 2>&1 &
operator_pid=$!
started=$SECONDS
if [[ $TIME_LAPSE_FROM == now ]]; then from_epoch=$(date -u +%s); else from_epoch=$(date -u -d "$TIME_LAPSE_FROM" +%s); fi

echo
if [[ $MODE == lapse ]]; then
  echo "=== MODE: TIME LAPSE — the operator's clock is NOT real time ==="
  echo "    it starts at $TIME_LAPSE_FROM and runs ${TIME_LAPSE_SPEED}x ($((TIME_LAPSE_SPEED / 86400)) day(s) per second), with the real"
  echo "    30-day warning and grace periods: the examples and the demo tenant play out their lifecycle."
  echo "    The demo subscription runs until the end of $end; a renewal is applied after 50 s."
else
  echo "=== MODE: REAL TIME — the real policy (30-day warning and grace periods) at the real date ==="
  echo "    The examples as the operator sees them today. To watch them play out: $0 --time-lapse"
fi
echo "operator running (pid $operator_pid, log $ENVTEST_RUN_DIR/operator.log)"
echo "metrics: curl -s http://$METRICS_ADDR/metrics | grep ^mailsec_   (health: /healthz, /readyz)"
echo "watch:   KUBECONFIG=$KUBECONFIG kubectl get tenants -w"

clock() {
  if [[ $MODE == lapse ]]; then
    echo "operator clock ≈ $(date -u -d "@$((from_epoch + (SECONDS - started) * TIME_LAPSE_SPEED))" '+%Y-%m-%d %H:%M UTC')"
  else
    echo "real time"
  fi
}

renewed=0
sleep 3
deadline=$((SECONDS + DEMO_SECONDS))
while ((SECONDS < deadline)); do
  echo; echo "=== $(date -u +%H:%M:%S) real, $(clock) ==="
  kubectl get tenants,subscriptions
  if [[ $MODE == lapse && $renewed == 0 ]] && ((SECONDS - started >= 50)); then
    renewed=1
    renewal_end="$(date -u -d "@$((from_epoch + (SECONDS - started) * TIME_LAPSE_SPEED + 365 * 86400))" +%Y-%m-%d)"
    echo; echo ">>> renewing the demo tenant: subscription demo-esg-renewal until the end of $renewal_end"
    kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: mailsec.io/v1alpha1
kind: Subscription
metadata: {name: demo-esg-renewal}
spec: {tenantRef: demo, product: email-safeguard, startDate: "2026-01-01", endDate: "$renewal_end", seats: 10}
YAML
  fi
  sleep 10
done
echo; kubectl describe tenant demo | sed -n '/^Status:/,$p'

if [[ "${KEEP:-0}" == 1 ]]; then
  echo; echo "Left running ($( [[ $MODE == lapse ]] && echo "TIME LAPSE ${TIME_LAPSE_SPEED}x" || echo "real time")). export KUBECONFIG=$KUBECONFIG; stop with: kill $operator_pid; $ENVTEST_SH stop"
fi
