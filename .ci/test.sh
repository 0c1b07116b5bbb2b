#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine with Rust, Go 1.26 and Python 3.
# Builds what it needs (the real kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd, kwok, helm and krew from their Go modules, cached outside the clone; a Python venv with
# moto[server]), runs formatting and lint gates, the Rust tests of every crate (the end-to-end
# ones on a real control plane), and the generated-artifact drift checks. Every service the
# tests start binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-2}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n==> %s\n' "$*"; }

step "test components: the real Kubernetes binaries, etcd, kwok, helm and krew (Go modules)"
# Built once into ${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs/bin/ (outside the clone); a cached
# build is reused. Needs Go 1.26 and the Go module proxy the first time.
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go 1.26 is needed to build the test components (kube-apiserver, etcd, kwok, helm, krew)"; exit 1
fi
BIN_DIR=$(bash tests/controlplane/build.sh | tail -n 1)
export KARPENTER_TEST_BIN_DIR="$BIN_DIR"
# The real kubectl (v1.36.3, built above) is the one the plugin's tests find on PATH.
export PATH="$BIN_DIR:$PATH"
kubectl version --client 2>/dev/null | sed -n 1p
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

step "Terraform module formatting (hclfmt: the HCL formatter terraform fmt is built on)"
# No terraform or tofu binary is built here (their Go modules are large); hclfmt v2.25.0 from
# github.com/hashicorp/hcl/v2 applies the same hclwrite formatting, and builds in under a minute.
HCLFMT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs/bin/hclfmt-v2.25.0"
if [ ! -x "$HCLFMT_DIR/hclfmt" ]; then
  GOBIN="$HCLFMT_DIR" go install github.com/hashicorp/hcl/v2/cmd/hclfmt@v2.25.0
fi
for f in manifests/terraform/*.tf; do
  diff -u "$f" <("$HCLFMT_DIR/hclfmt" "$f") || { echo "$f is not formatted: $HCLFMT_DIR/hclfmt -w $f"; exit 1; }
done
echo "terraform: formatted"

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

