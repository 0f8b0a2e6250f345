#!/usr/bin/env bash
# Regenerates the CRDs from the Rust types into crds/ and the Helm chart (tests fail on drift).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp)"
cargo run --quiet -- crd > "$tmp"
cp "$tmp" crds/mailsec.io_crds.yaml
mv "$tmp" charts/mailsec-operator/crds/mailsec.io_crds.yaml
echo "crds/mailsec.io_crds.yaml and charts/mailsec-operator/crds/ regenerated"
