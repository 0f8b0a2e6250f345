#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing (scripts/setup.sh),
# then unit and property tests, the CRD drift test, the integration tests on a real
# kube-apiserver + etcd (started per test binary by tests/common via ../shared/envtest, and
# stopped again, also on failure) and the doc tests.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -- --nocapture  # extra arguments go to both cargo test runs
#
# Environment (tests/common/mod.rs; the first two as controller-runtime's envtest reads them):
#   USE_EXISTING_CLUSTER=true     run the integration tests against the current kubeconfig's cluster
#                                 (KUBECONFIG or ~/.kube/config; the CRDs are installed there;
#                                 nothing is started)
#   KUBEBUILDER_ASSETS=DIR        start kube-apiserver and etcd from DIR (and use its kubectl), as
#                                 setup-envtest makes it, with envtest's flags, instead of envtest.sh
#   MAILSEC_TEST_KUBECONFIG=PATH  like USE_EXISTING_CLUSTER, with that kubeconfig (older name)
#   ENVTEST_SH=PATH               envtest.sh to use (default: ../shared/envtest/envtest.sh)
#   ENVTEST_KEEP_RUN_DIR=1        keep the API servers' logs and kubeconfigs after the tests
#   RUST_LOG=mailsec_operator=debug  show what the in-process operators do during the tests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

cargo test --all-targets "$@"
cargo test --doc "$@"
