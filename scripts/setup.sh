#!/usr/bin/env bash
# Prepares a Debian 12 machine to run Sluice and its tests: Debian packages, the BPF
# filesystem, npm dependencies and the TypeScript build. Safe to run again; it says what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (Sluice loads BPF programs and creates network namespaces)" >&2
  exit 1
fi

# Command -> Debian package that provides it.
declare -A need=(
  [clang]=clang [llc]=llvm [bpftool]=bpftool [ip]=iproute2 [tc]=iproute2 [ethtool]=ethtool
  [iperf3]=iperf3 [tcpdump]=tcpdump [nsenter]=util-linux [ping]=iputils-ping [make]=make
  [nc]=netcat-openbsd [curl]=curl [python3]=python3
  [iptables-save]=iptables [nft]=nftables
  [openssl]=openssl # certificates of the lab's Kubernetes control plane (lab up --kubernetes)
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  say "installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
else
  say "Debian packages: all present"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js 20 or later is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  say "mounting the BPF filesystem at /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

say "building TypeScript"
npx tsc -p tsconfig.json
say "ready"
