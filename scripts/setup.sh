#!/usr/bin/env bash
# Install everything vpcctl's lab, tests and demo need on a fresh Debian/Ubuntu machine (as root):
# system packages, a venv in .venv, the project with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-venv python3-dev gcc
  wireguard-tools wireguard-go          # wg (key cross-check, status) and the userspace backend
  openssh-server openssh-client         # sshd in every lab host, ssh for checks
  nftables iproute2 iputils-ping tcpdump procps util-linux kmod
  bind9-dnsutils dnsperf dnsmasq-base   # dig, the resolver benchmark and its baseline
  busybox-static                        # nc in the VM stage, the Docker lab's image
  systemd                               # systemd-analyze verifies the example unit
  docker.io iptables                    # a real dockerd per lab host (no systemd: not started)
  qemu-system-x86 linux-image-amd64     # the kernel VM stage (kernel WireGuard, IPIP)
  iperf3                                # bench/dataplane.py: TCP throughput
  graphviz                              # vpcctl graph --format svg|png (dot)
)
if [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root (it installs Debian packages and the lab needs network namespaces)" >&2
  exit 1
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup done: $(.venv/bin/vpcctl --version) in $(pwd)/.venv" >&2
