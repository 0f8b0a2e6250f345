# Sourced by scripts/test.sh and scripts/run-local.sh: installs what a fresh machine of this kind
# lacks (it has the Rust toolchain, python3/pip, node/npm and apt: system tools, kubectl, aiosmtpd
# for the notification tests) and finds envtest.
# Sets ENVTEST_SH unless MAILSEC_TEST_KUBECONFIG or USE_EXISTING_CLUSTER=true names an existing
# cluster (tests/harness.rs then needs KUBEBUILDER_ASSETS or the envtest cache), and MAILSEC_PYTHON:
# a Python with the real Helm engine (helm-python-sdk) and a Lua interpreter (lupa) for the
# chart and GitOps tests.

setup_log() { echo "setup: $*" >&2; }
setup_die() { echo "setup: ERROR: $*" >&2; exit 1; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else setup_die "need root (or sudo) to run: $*"; fi
}

# System tools: envtest needs these to start a kube-apiserver + etcd.
declare -A package_of=([openssl]=openssl [curl]=curl [gzip]=gzip [flock]=util-linux [python3]=python3)
missing=()
for tool in openssl curl gzip flock python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
apt_updated=0
if ((${#missing[@]})); then
  setup_log "installing ${missing[*]}"
  as_root apt-get update -qq; apt_updated=1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# kubectl >= 1.24 (for `kubectl patch --subresource`). Machines of this kind ship v1.32 from the
# `kubectl` apt package; Debian's own `kubernetes-client` is v1.20, too old.
if ! command -v kubectl >/dev/null 2>&1; then
  ((apt_updated)) || { as_root apt-get update -qq; apt_updated=1; }
  candidate="$(apt-cache policy kubectl 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
    setup_log "installing kubectl $candidate"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl
  else
    setup_die "kubectl is missing and no apt source offers it: install kubectl >= 1.24"
  fi
fi

# aiosmtpd (PyPI): the real SMTP server the notification tests deliver to.
if ! python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    ((apt_updated)) || { as_root apt-get update -qq; apt_updated=1; }
    setup_log "installing python3-pip"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip
  fi
  setup_log "installing aiosmtpd (pip)"
  python3 -m pip install --quiet aiosmtpd 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages aiosmtpd \
    || setup_die "could not install aiosmtpd with pip"
fi

case "${USE_EXISTING_CLUSTER:-}" in 1|t|T|true|TRUE|True) use_existing=1 ;; *) use_existing=0 ;; esac
if [[ -z "${MAILSEC_TEST_KUBECONFIG:-}" && $use_existing == 0 ]]; then
  ENVTEST_SH="${ENVTEST_SH:-$PWD/../shared/envtest/envtest.sh}"
  [[ -f "$ENVTEST_SH" ]] || setup_die "$ENVTEST_SH not found: the shared/ folder must sit beside this \
repository, or set ENVTEST_SH, or MAILSEC_TEST_KUBECONFIG to use an existing cluster"
  export ENVTEST_SH
  # Unpack (or build) the API server binaries once, before anything starts a server.
  "$ENVTEST_SH" build
fi

# Python packages for the chart tests (real Helm v4 engine) and the Argo CD health-check tests
# (Lua), in a virtualenv of their own; installed only when missing.
MAILSEC_PYENV="${MAILSEC_PYENV:-$HOME/.cache/mailsec-operator/pyenv}"
if ! "$MAILSEC_PYENV/bin/python" -c 'import helm_python, lupa' >/dev/null 2>&1; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    ((apt_updated)) || { as_root apt-get update -qq; apt_updated=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  setup_log "installing helm-python-sdk and lupa into $MAILSEC_PYENV"
  python3 -m venv "$MAILSEC_PYENV"
  "$MAILSEC_PYENV/bin/pip" install -q --disable-pip-version-check 'helm-python-sdk>=0.2.2,<0.3' 'lupa>=2,<3'
fi
export MAILSEC_PYTHON="$MAILSEC_PYENV/bin/python"
