#!/usr/bin/env bash
# Builds the krew archives of `kubectl-karpenter` and writes the krew manifest with their sha256.
#
#   .ci/release.sh [--out DIR] [--manifest FILE] [--binary TARGET=PATH]... [--require-all]
#   .ci/release.sh --manifest-only      # the committed manifest: every sha256 zero, nothing built
#
# For every platform krew-manifest.yaml lists, it builds `cargo build --release -p
# kubectl-karpenter --target TARGET` (or packages the binary given with --binary, e.g. a debug
# build for tests), archives the binary and LICENSE as
# DIR/kubectl-karpenter-vVERSION-TARGET.tar.gz (.zip for Windows), and writes FILE (default: the
# repository's krew-manifest.yaml) with each archive's release URL and sha256. A platform whose
# Rust target is not installed here (`rustup target add TARGET`) keeps a zero sha256 and is
# reported; --require-all makes that an error (what a release job runs, on a machine with every
# target installed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/target/krew"
COMPLETE=kubectl_complete-karpenter
MANIFEST="$ROOT/krew-manifest.yaml"
REQUIRE_ALL=0
BUILD=1
declare -A GIVEN=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --manifest) MANIFEST=$2; shift 2 ;;
    --binary) GIVEN[${2%%=*}]=${2#*=}; shift 2 ;;
    --require-all) REQUIRE_ALL=1; shift ;;
    --manifest-only) BUILD=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
REPO=https://github.com/example/karpenter-rs
# krew os/arch -> Rust target.
PLATFORMS=(
  "linux amd64 x86_64-unknown-linux-gnu"
  "linux arm64 aarch64-unknown-linux-gnu"
  "darwin amd64 x86_64-apple-darwin"
  "darwin arm64 aarch64-apple-darwin"
  "windows amd64 x86_64-pc-windows-msvc"
)
HOST=$(rustc -vV | sed -n 's/^host: //p')
INSTALLED=$(rustup target list --installed 2>/dev/null || echo "$HOST")
mkdir -p "$OUT"
missing=()
entries=""
for p in "${PLATFORMS[@]}"; do
  read -r os arch target <<<"$p"
  exe=kubectl-karpenter; ext=tar.gz
  if [ "$os" = windows ]; then exe=kubectl-karpenter.exe; ext=zip; fi
  archive="kubectl-karpenter-v$VERSION-$target.$ext"
  sha=0000000000000000000000000000000000000000000000000000000000000000
  bin=${GIVEN[$target]:-}
  if [ "$BUILD" = 1 ] && [ -z "$bin" ] && grep -qx "$target" <<<"$INSTALLED"; then
    cargo build --release -q -p kubectl-karpenter --target "$target"
    bin="$ROOT/target/$target/release/$exe"
  fi
  if [ -n "$bin" ]; then
    stage=$(mktemp -d)
    cp "$bin" "$stage/$exe"
    cp "$ROOT/LICENSE" "$stage/LICENSE"
    if [ "$ext" = zip ]; then
      (cd "$stage" && zip -q "$OUT/$archive" "$exe" LICENSE)
    else
      cp "$ROOT/plugin/$COMPLETE" "$stage/$COMPLETE"
      tar -C "$stage" -czf "$OUT/$archive" "$exe" LICENSE "$COMPLETE"
    fi
    rm -rf "$stage"
    sha=$(sha256sum "$OUT/$archive" | cut -d' ' -f1)
    echo "built $OUT/$archive ($sha)" >&2
  else
    missing+=("$target")
  fi
  shim=""
  if [ "$ext" != zip ]; then
    shim="
        - from: $COMPLETE
          to: ."
  fi
  entries+="    - selector:
        matchLabels:
          os: $os
          arch: $arch
      uri: $REPO/releases/download/v$VERSION/$archive
      sha256: \"$sha\"
      files:
        - from: $exe
          to: .
        - from: LICENSE
          to: .$shim
      bin: $exe
"
done

cat >"$MANIFEST" <<EOF
# krew plugin manifest for \`kubectl karpenter\`, written by .ci/release.sh: it builds one archive
# per platform (the binary, LICENSE and, except on Windows, the kubectl_complete-karpenter
# completion script), and fills in each archive's release URL and sha256. A
# zero sha256 marks a platform whose archive was not built where this file was written.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: karpenter
spec:
  version: v$VERSION
  homepage: $REPO
  shortDescription: Explain, validate and simulate Karpenter nodes and Provisioners
  description: |
    Explains why a pod is pending (per Provisioner, the first constraint that failed, with
    both sides' values), why a node exists and when it goes, and what a Provisioner allows,
    with the controller's own packing engine and rules; shows every node with its usage and
    price. Checks karpenter.sh/v1alpha5 Provisioners and AWSNodeTemplates offline with the
    webhook's defaulting and validation, pointing at the exact field and fix for every
    mistake, and simulates which instance types pods would launch, at what price.
  caveats: |
    Completion of "kubectl karpenter <TAB>" (kubectl 1.26+) needs the completion script on
    PATH:
      ln -s "\${KREW_ROOT:-\$HOME/.krew}/store/karpenter/v$VERSION/$COMPLETE" \\
        "\${KREW_ROOT:-\$HOME/.krew}/bin/$COMPLETE"
  platforms:
$entries
EOF
echo "wrote $MANIFEST" >&2
if [ "$BUILD" = 1 ] && [ ${#missing[@]} -gt 0 ]; then
  echo "not built (Rust target not installed): ${missing[*]}" >&2
  if [ "$REQUIRE_ALL" = 1 ]; then exit 1; fi
fi
