#!/usr/bin/env bash
# Builds the upstream Kubernetes control plane that the lab can run (kube-apiserver,
# kube-controller-manager, kube-proxy, kubectl) and etcd, at pinned versions, from the Go module
# proxy with the Go toolchain, into a cache outside the repository:
#
#   ${SLUICE_K8S_CACHE:-$HOME/.cache/sluice/kubernetes}/<k8s-version>-etcd<etcd-version>/bin/
#
# A complete cache (every binary present, the stamp naming the same versions) is reused: the
# script then only prints the bin directory. Go is used only here, to build upstream code; the
# two wrapper modules it needs (replace directives for Kubernetes' staging modules, a three-line
# main for etcd) are generated in the cache, never in the repository.
#
#   scripts/build-kubernetes.sh                  build if needed, print the bin directory last
#   scripts/build-kubernetes.sh --print-bin-dir  print the bin directory if the cache is complete,
#                                                exit 1 otherwise (builds nothing)
#   scripts/build-kubernetes.sh --force          rebuild even if the cache is complete
#
# Environment: SLUICE_K8S_CACHE (cache root), SLUICE_K8S_VERSION and SLUICE_ETCD_VERSION (override
# the pins), GOMODCACHE (default $HOME/go/pkg/mod), SLUICE_K8S_GOCACHE (Go's build cache, default
# <cache root>/go-build). GOTOOLCHAIN=go1.27.3 is honoured if a later pin ever needs Go 1.27.
set -euo pipefail

# Pins. v1.37.2 and its staging modules v0.37.2 declare go 1.26.0, as does etcd v3.7.3, so the
# machine's Go 1.26 builds them without a toolchain download. Kubernetes v1.37's own go.mod
# requires the etcd v3.7 client and server modules.
K8S_VERSION="${SLUICE_K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${SLUICE_ETCD_VERSION:-v3.7.3}"
RECIPE=1 # bump when the way binaries are built changes, to invalidate older caches

CACHE_ROOT="${SLUICE_K8S_CACHE:-$HOME/.cache/sluice/kubernetes}"
BUILD_DIR="$CACHE_ROOT/${K8S_VERSION}-etcd${ETCD_VERSION#v}"
BIN_DIR="$BUILD_DIR/bin"
STAMP="$BUILD_DIR/stamp"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-proxy kubectl)
BINARIES=(etcd "${K8S_COMMANDS[@]}")
STAMP_TEXT="recipe=$RECIPE
kubernetes=$K8S_VERSION
etcd=$ETCD_VERSION"

say() { printf '[build-kubernetes] %s\n' "$*" >&2; }
die() {
  printf 'build-kubernetes: %s\n' "$*" >&2
  exit 1
}

cache_complete() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] || return 1
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
}

force=0
case "${1:-}" in
  --print-bin-dir)
    if cache_complete; then
      echo "$BIN_DIR"
      exit 0
    fi
    exit 1
    ;;
  --force) force=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  '') ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac
[ $# -le 1 ] || die "one argument at most (see --help)"

if [ "$force" -eq 0 ] && cache_complete; then
  say "cache complete: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the Go toolchain is needed to build Kubernetes (go 1.26 or later)"
[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "SLUICE_K8S_VERSION must look like v1.37.2"
K8S_MINOR="${BASH_REMATCH[1]}"
STAGING_VERSION="v0.${K8S_MINOR}.${BASH_REMATCH[2]}" # k8s.io/api etc. are tagged v0.<minor>.<patch>
[[ "$ETCD_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "SLUICE_ETCD_VERSION must look like v3.7.3"

# Go writes only to the module cache ($HOME/go by default), its build cache (kept beside the
# binaries so that everything this script makes is under one directory) and the cache dir.
export GOCACHE="${SLUICE_K8S_GOCACHE:-$CACHE_ROOT/go-build}"
export GOMODCACHE="${GOMODCACHE:-$(go env GOMODCACHE)}"
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
unset GOOS GOARCH

mkdir -p "$BUILD_DIR" "$GOCACHE"
exec 9>"$BUILD_DIR/.lock"
flock -n 9 || {
  say "another build of $BUILD_DIR is running; waiting for it"
  flock 9
  if [ "$force" -eq 0 ] && cache_complete; then
    echo "$BIN_DIR"
    exit 0
  fi
}

start=$SECONDS
say "Kubernetes $K8S_VERSION (staging modules $STAGING_VERSION), etcd $ETCD_VERSION"
say "$(go version); GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"
rm -f "$STAMP"
rm -rf "$BUILD_DIR/bin.partial"
mkdir -p "$BUILD_DIR/bin.partial" "$BIN_DIR"

# --- the Kubernetes wrapper module -----------------------------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...,
# which only applies inside its own repository. The wrapper replaces each of them (the list is
# read from that go.mod) with its published v0.<minor>.<patch> release instead.
K8S_SRC="$BUILD_DIR/src/kubernetes"
mkdir -p "$K8S_SRC"
say "fetching k8s.io/kubernetes@$K8S_VERSION"
k8s_gomod=$(cd "$BUILD_DIR" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') || true
[ -f "$k8s_gomod" ] || die "could not fetch k8s.io/kubernetes@$K8S_VERSION"
k8s_time=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${k8s_gomod%.mod}.info")
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$k8s_gomod" | sort -u)
[ ${#staging[@]} -gt 10 ] || die "found no staging modules in $k8s_gomod"
k8s_go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$k8s_gomod")
k8s_go=${k8s_go:-1.26.0}
{
  echo "// Generated by sluice scripts/build-kubernetes.sh: builds upstream Kubernetes commands."
  echo "module sluice.local/build/kubernetes"
  echo
  echo "go $k8s_go"
  echo
  echo "godebug default=go${k8s_go%.*}" # as upstream's own go.mod: old GODEBUG defaults off
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do
    echo "	$m => $m $STAGING_VERSION"
  done
  echo ")"
  echo
  echo "tool ("
  for c in "${K8S_COMMANDS[@]}"; do
    echo "	k8s.io/kubernetes/cmd/$c"
  done
  echo ")"
} >"$K8S_SRC/go.mod"
rm -f "$K8S_SRC/go.sum"
say "resolving Kubernetes' module graph (${#staging[@]} staging modules at $STAGING_VERSION)"
(cd "$K8S_SRC" && go mod tidy)

# --- the etcd wrapper module -----------------------------------------------------------------
# etcd's main package lives in its root module, whose replace directives do not apply to a
# dependent either; the server module's etcdmain.Main is what that main calls.
ETCD_SRC="$BUILD_DIR/src/etcd"
mkdir -p "$ETCD_SRC"
cat >"$ETCD_SRC/go.mod" <<EOF
// Generated by sluice scripts/build-kubernetes.sh: builds upstream etcd.
module sluice.local/build/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
cat >"$ETCD_SRC/main.go" <<'EOF'
// Generated by sluice scripts/build-kubernetes.sh: etcd's own main.go, calling etcdmain.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
rm -f "$ETCD_SRC/go.sum"
say "resolving etcd's module graph"
(cd "$ETCD_SRC" && go mod tidy)

# --- build -----------------------------------------------------------------------------------
# As upstream's release builds: static, -trimpath, no symbol table or DWARF, the build tags of
# hack/lib/golang.sh, and the version variables of hack/lib/version.sh (no git checkout here, so
# the commit is empty and the tree state is "archive"; the build date is the release's time).
k8s_x() {
  local key=$1 val=$2 pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    printf " -X '%s.%s=%s'" "$pkg" "$key" "$val"
  done
}
K8S_LDFLAGS="-s -w$(k8s_x gitVersion "$K8S_VERSION")$(k8s_x gitMajor 1)$(k8s_x gitMinor "$K8S_MINOR")"
K8S_LDFLAGS+="$(k8s_x gitCommit '')$(k8s_x gitTreeState archive)$(k8s_x buildDate "${k8s_time:-1970-01-01T00:00:00Z}")"
ETCD_LDFLAGS="-s -w -X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION'"

# One command at a time, for progress. Building them all in one `go build`, with etcd beside it,
# was measured no faster: a few huge packages compile one after the other either way, using
# about one of the two cores. kube-apiserver, the first, compiles most of the shared packages.
build_one() { # name dir ldflags tags package
  local name=$1 dir=$2 ldflags=$3 tags=$4 pkg=$5 t0=$SECONDS
  say "building $name ($pkg)${6:+ $6}"
  (cd "$dir" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$BUILD_DIR/bin.partial/$name" "$pkg")
  say "  $name: $((SECONDS - t0)) s, $(du -h "$BUILD_DIR/bin.partial/$name" | cut -f1)"
}
build_one etcd "$ETCD_SRC" "$ETCD_LDFLAGS" "" . "(about 2 minutes on 2 cores)"
for c in "${K8S_COMMANDS[@]}"; do
  hint=""
  [ "$c" = kube-apiserver ] && hint="(about 15 minutes on 2 cores with an empty Go build cache)"
  build_one "$c" "$K8S_SRC" "$K8S_LDFLAGS" "selinux,notest,grpcnotrace" "k8s.io/kubernetes/cmd/$c" "$hint"
done

for b in "${BINARIES[@]}"; do
  if [ "$b" = kubectl ]; then v=(version --client); else v=(--version); fi
  "$BUILD_DIR/bin.partial/$b" "${v[@]}" >/dev/null 2>&1 || die "$b does not run (${v[*]})"
  mv -f "$BUILD_DIR/bin.partial/$b" "$BIN_DIR/$b"
done
rmdir "$BUILD_DIR/bin.partial"
printf '%s\n' "$STAMP_TEXT" >"$STAMP"
elapsed=$((SECONDS - start))

# --- report ----------------------------------------------------------------------------------
say "versions:"
"$BIN_DIR/kube-apiserver" --version | sed 's/^/  /' >&2
"$BIN_DIR/etcd" --version | sed -n '1s/^/  /p' >&2
say "build time: $((elapsed / 60)) min $((elapsed % 60)) s"
# The module cache's share: the extracted source and the zip of every module a binary compiles.
modfiles=$(
  {
    (cd "$K8S_SRC" && go list -deps -tags selinux,notest,grpcnotrace \
      -f '{{with .Module}}{{with .Replace}}{{.Dir}} {{.GoMod}}{{else}}{{.Dir}} {{.GoMod}}{{end}}{{end}}' \
      "${K8S_COMMANDS[@]/#/k8s.io/kubernetes/cmd/}")
    (cd "$ETCD_SRC" && go list -deps -f '{{with .Module}}{{.Dir}} {{.GoMod}}{{end}}' .)
  } | sort -u | while read -r dir gomod; do
    case "$dir" in "$GOMODCACHE"/*) echo "$dir" ;; *) continue ;; esac
    if [ -f "${gomod%.mod}.zip" ]; then echo "${gomod%.mod}.zip"; fi
  done
)
modshare=$(printf '%s\n' "$modfiles" | tr '\n' '\0' | du -sck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
say "disk: binaries $(du -sh "$BIN_DIR" | cut -f1), wrappers+binaries $(du -sh "$BUILD_DIR" | cut -f1)," \
  "Go build cache $(du -sh "$GOCACHE" | cut -f1) ($GOCACHE, can be deleted)," \
  "module cache share $((modshare / 1024)) MiB ($GOMODCACHE)"
echo "$BIN_DIR"
