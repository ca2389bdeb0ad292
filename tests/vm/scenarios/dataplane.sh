#!/bin/bash
# bench/dataplane.py inside the VM of tests/vm/run_vm.py: kernel WireGuard (the agent picks the
# kernel module when there is one; the bench records the interface's kind) and routing "ipip".
# Not part of the CI stage: `python bench/dataplane.py --vm` runs it. $BENCH_ARGS are passed on;
# the result comes back as $VPCCTL_VM_OUT/dataplane.json.
[ "${VPCCTL_VM:-}" = 1 ] || { echo "dataplane.sh: run it with bench/dataplane.py --vm" >&2; exit 2; }
cd "${VPCCTL_REPO:?}" || exit 2
# shellcheck disable=SC2086
PYTHONPATH=$PWD PYTHONDONTWRITEBYTECODE=1 "${VPCCTL_PYTHON:-python3}" bench/dataplane.py \
    --routing ipip ${BENCH_ARGS:-} --json-out "${VPCCTL_VM_OUT:-/out}/dataplane.json"
