#!/usr/bin/env bash
# README's first command: set everything up on a fresh Debian/Ubuntu machine (as root) and run
# the demo: a 3-host VPC in network namespaces with real sshd and wireguard-go. --keep keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
