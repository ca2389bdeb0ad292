#!/usr/bin/env bash
# The test suite: unit, CLI and namespace-lab tests (lab tests need root; under CI=true a lab
# test that cannot run fails instead of skipping). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh   # on a fresh machine: install first
export PYTHONDONTWRITEBYTECODE=1   # nothing written into the checkout (see tests/conftest.py)
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
