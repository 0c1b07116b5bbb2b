#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine (as root, or with sudo for apt).
# Installs what it needs from the package registries (kubectl via Debian's kubernetes-client,
# a Python venv with moto[server]), runs formatting and lint gates, the Rust tests of every
# crate, and the generated-artifact drift checks. Every service the tests start binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-2}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n==> %s\n' "$*"; }

step "tools"
if ! command -v kubectl >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq kubernetes-client
fi
kubectl version --client 2>/dev/null | head -1
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r controller/scripts/requirements.txt
export KARPENTER_TEST_PYTHON="$VENV/bin/python"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets -j"$JOBS" -- -D warnings

step "one rustls crypto provider: aws-lc-rs only (no ring anywhere in the workspace)"
if cargo tree --workspace --all-features -e normal,build -i ring 2>/dev/null | grep -q .; then
  cargo tree --workspace --all-features -e normal,build -i ring; echo "ring must not be a dependency"; exit 1
fi
echo "ring: absent"

# Build every test target and the binaries the end-to-end tests run, with the features the
# test run uses (dev-dependencies change feature unification, so a plain `cargo build` would
# compile the AWS SDK a second time).
step "cargo test --no-run (all test targets and binaries)"
cargo test --workspace --no-run -j"$JOBS"

step "cargo test (workspace)"
cargo test --workspace -j"$JOBS"

step "generated artifacts are up to date"
"$VENV/bin/python" controller/scripts/gen_catalog.py --check
echo "catalog: up to date"
