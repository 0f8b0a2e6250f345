#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests, the CRD drift test, the integration tests
# on a real kube-apiserver + etcd (started per test binary by tests/common via
# ../shared/envtest/envtest.sh, and stopped again) and the doc tests.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -- --nocapture  # extra arguments go to both cargo test runs
#
# Environment:
#   MAILSEC_TEST_KUBECONFIG=PATH  run the integration tests against that existing cluster instead
#                                 (the CRDs are installed there; nothing is started)
#   ENVTEST_SH=PATH               envtest.sh to use (default: ../shared/envtest/envtest.sh)
#   ENVTEST_KEEP_RUN_DIR=1        keep the API servers' logs and kubeconfigs after the tests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "test.sh: $*" >&2; exit 1; }

missing=()
for tool in cargo kubectl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [[ -z "${MAILSEC_TEST_KUBECONFIG:-}" ]]; then
  # what envtest.sh needs to start a server
  for tool in openssl curl gzip flock python3; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
fi
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (bash .ci/run installs them)"

if [[ -z "${MAILSEC_TEST_KUBECONFIG:-}" ]]; then
  ENVTEST_SH="${ENVTEST_SH:-$PWD/../shared/envtest/envtest.sh}"
  [[ -f "$ENVTEST_SH" ]] || die "$ENVTEST_SH not found: the shared/ folder must sit beside this \
repository, or set ENVTEST_SH, or MAILSEC_TEST_KUBECONFIG to use an existing cluster"
  export ENVTEST_SH
  # Unpack (or build) the API server binaries once, before test binaries start servers.
  "$ENVTEST_SH" build
fi

cargo test --all-targets "$@"
cargo test --doc "$@"
