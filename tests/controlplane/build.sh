#!/usr/bin/env bash
# Builds the real components the test suite runs, from their Go modules, at the versions pinned
# by the wrapper modules beside this script (go.mod + go.sum in each folder):
#
#   kubernetes/  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes)
#   etcd/        etcd (go.etcd.io/etcd/server/v3)
#   kwok/        kwok (sigs.k8s.io/kwok): plays the kubelet of the nodes the controller creates
#   helm/        helm (helm.sh/helm/v3)
#   krew/        krew and validate-krew-manifest (sigs.k8s.io/krew)
#
# Binaries go to a cache outside the clone, one folder per component and version:
#   ${KARPENTER_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs}/bin/<component>-<version>-<go.sum hash>/
# and a component whose folder is complete is not rebuilt. The last line printed on stdout is a
# folder with every binary linked in, which the tests read from $KARPENTER_TEST_BIN_DIR.
#
# Usage: build.sh [--print-dir] [component...]
#   --print-dir   only print the combined folder (building whatever is missing first)
# Go is test tooling only; the first run downloads modules through the Go module proxy.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KARPENTER_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/karpenter-rs}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
KREW_VERSION=v0.4.3

quiet=0
if [ "${1:-}" = "--print-dir" ]; then quiet=1; shift; fi
log() { if [ "$quiet" = 0 ]; then printf '%s\n' "$*" >&2; fi; }

command -v go >/dev/null 2>&1 || { echo "error: go not found on PATH (Go 1.26 is needed to build the test components)" >&2; exit 2; }

# The folder for one component: its version plus a hash of its go.sum, so a changed pin rebuilds.
component_dir() {
  local name=$1 version=$2 sum
  sum=$(sha256sum "$HERE/$name/go.sum" | cut -c1-12)
  printf '%s/bin/%s-%s-%s' "$CACHE" "$name" "$version" "$sum"
}

# build NAME VERSION LDFLAGS TAGS BINARY=PACKAGE...
build() {
  local name=$1 version=$2 ldflags=$3 tags=$4; shift 4
  local dir spec; dir=$(component_dir "$name" "$version")
  local complete=1
  for spec in "$@"; do [ -x "$dir/${spec%%=*}" ] || complete=0; done
  if [ "$complete" = 1 ] && [ -f "$dir/.complete" ]; then
    log "==> $name $version: cached in $dir"
    printf '%s\n' "$dir"
    return
  fi
  log "==> $name $version: building into $dir"
  local tmp="$dir.tmp.$$" start=$SECONDS pkgs=()
  rm -rf "$tmp"; mkdir -p "$tmp"
  for spec in "$@"; do pkgs+=("${spec#*=}"); done
  (
    cd "$HERE/$name"
    go build -p "${GO_BUILD_JOBS:-2}" -tags "$tags" -ldflags "-s -w $ldflags" -o "$tmp/" "${pkgs[@]}"
  ) >&2
  # `go build -o dir/` names each binary after the last element of its package path, leaving out
  # a major-version suffix (go.etcd.io/etcd/server/v3 -> server).
  for spec in "$@"; do
    local bin=${spec%%=*} pkg=${spec#*=} built
    pkg=$(printf '%s' "$pkg" | sed -E 's#/v[0-9]+$##')
    built="$tmp/$(basename "$pkg")"
    if [ "$built" != "$tmp/$bin" ]; then mv "$built" "$tmp/$bin"; fi
  done
  touch "$tmp/.complete"
  rm -rf "$dir"; mv "$tmp" "$dir"
  log "    $name built in $((SECONDS - start)) s"
  printf '%s\n' "$dir"
}

k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
done

want=("$@")
if [ ${#want[@]} = 0 ]; then want=(kubernetes etcd kwok helm krew); fi
total_start=$SECONDS
dirs=()
for c in "${want[@]}"; do
  case "$c" in
    kubernetes) dirs+=("$(build kubernetes "$K8S_VERSION" "$k8s_ldflags" "selinux,notest,grpcnotrace" \
                  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
                  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
                  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
                  kubectl=k8s.io/kubernetes/cmd/kubectl)") ;;
    etcd) dirs+=("$(build etcd "$ETCD_VERSION" "" "" etcd=go.etcd.io/etcd/server/v3)") ;;
    kwok) dirs+=("$(build kwok "$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "" \
                  kwok=sigs.k8s.io/kwok/cmd/kwok)") ;;
    helm) dirs+=("$(build helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "" \
                  helm=helm.sh/helm/v3/cmd/helm)") ;;
    krew) dirs+=("$(build krew "$KREW_VERSION" "-X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" "" \
                  krew=sigs.k8s.io/krew/cmd/krew \
                  validate-krew-manifest=sigs.k8s.io/krew/cmd/validate-krew-manifest)") ;;
    *) echo "error: unknown component '$c' (kubernetes, etcd, kwok, helm, krew)" >&2; exit 2 ;;
  esac
done

# One folder with every binary linked in, named after all the versions.
combined="$CACHE/bin/all-$(printf '%s\n' "${dirs[@]}" | xargs -n1 basename | sha256sum | cut -c1-12)"
mkdir -p "$combined"
for d in "${dirs[@]}"; do
  for f in "$d"/*; do ln -sfn "$f" "$combined/$(basename "$f")"; done
done
log "==> components ready in $((SECONDS - total_start)) s: $combined"
printf '%s\n' "$combined"
