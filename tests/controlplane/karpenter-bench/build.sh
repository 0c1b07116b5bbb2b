#!/usr/bin/env bash
# Builds, from the Go module pinned beside this script (go.mod + go.sum), the two Go programs that
# the engine comparison (controller/benches/compare.sh) runs:
#
#   scheduling.test     Karpenter's own scheduling benchmark as it ships: `go test -c
#                       -tags=test_performance` of sigs.k8s.io/karpenter/pkg/controllers/
#                       provisioning/scheduling (v1.14.1)
#   karpenter-harness   our harness (harness/main.go): Karpenter's scheduler on a workload file
#
# Like ../build.sh, binaries go to a cache outside the clone, one folder per version:
#   ${KARPENTER_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs}/bin/karpenter-bench-<version>-<hash>/
# where the hash covers go.sum and the harness source, and a complete folder is not rebuilt. The
# last line printed on stdout is that folder. Go is test tooling only; the build runs under
# `nice -n 10` with GO_BUILD_JOBS (default 2) parallel jobs.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KARPENTER_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
KARPENTER_VERSION=v1.14.1
PKG=sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling

command -v go >/dev/null 2>&1 || { echo "error: go not found on PATH (Go 1.26.6 or newer is needed)" >&2; exit 2; }

sum=$(cat "$HERE/go.sum" "$HERE/harness/main.go" | sha256sum | cut -c1-12)
dir="$CACHE/bin/karpenter-bench-$KARPENTER_VERSION-$sum"
if [ -f "$dir/.complete" ] && [ -x "$dir/scheduling.test" ] && [ -x "$dir/karpenter-harness" ]; then
  echo "==> karpenter-bench $KARPENTER_VERSION: cached in $dir" >&2
  printf '%s\n' "$dir"
  exit 0
fi
echo "==> karpenter-bench $KARPENTER_VERSION: building into $dir" >&2
tmp="$dir.tmp.$$"; start=$SECONDS
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$HERE"
  nice -n 10 go test -c -p "${GO_BUILD_JOBS:-2}" -tags=test_performance -o "$tmp/scheduling.test" "$PKG"
  nice -n 10 go build -p "${GO_BUILD_JOBS:-2}" -ldflags "-s -w" -o "$tmp/karpenter-harness" ./harness
) >&2
touch "$tmp/.complete"
rm -rf "$dir"; mv "$tmp" "$dir"
trap - EXIT
echo "    karpenter-bench built in $((SECONDS - start)) s" >&2
printf '%s\n' "$dir"
