#!/usr/bin/env bash
# Regenerate docs/example-graph.svg (the picture in README) from examples/homelab/vpc.toml:
#   scripts/graph-example.sh           (needs Graphviz: apt-get install graphviz)
set -euo pipefail
cd "$(dirname "$0")/.."
VPCCTL=${VPCCTL:-.venv/bin/vpcctl}
"$VPCCTL" -i examples/homelab/vpc.toml graph --format svg -o docs/example-graph.svg
echo "wrote docs/example-graph.svg" >&2
