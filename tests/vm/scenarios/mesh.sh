#!/bin/bash
# Issue 6 scenario for tests/vm/run_vm.py: a vpcctl mesh on a real kernel, routing "ipip".
#
#   python3 tests/vm/run_vm.py --script tests/vm/scenarios/mesh.sh --out /tmp/vmmesh
#   (or tests/vm/ci_stage.sh, which adds the hard timeout and the report)
#
# 3 hosts (netns + private mount ns, tests/lab/harness.Lab) on a 192.0.2.0/24 underlay, kernel
# WireGuard and an NBMA IPIP tunnel configured by `vpcctl agent apply`, VPCs prod and dev with
# containers, a service VIP with backends on two hosts; idempotent re-apply; a 4th host joins
# under a running ping. All of it runs in ONE Python process (mesh_driver.py): the agent is
# called in forked children that setns() into the host, because every interpreter start and
# `import pyroute2` costs seconds under TCG.
#
# Writes PASS/FAIL/INFO lines to $VPCCTL_VM_OUT/results.txt; exits 1 if a check failed.
set -u

OUT=${VPCCTL_VM_OUT:-/out}
PY=${VPCCTL_PYTHON:-python3}
REPO=${VPCCTL_REPO:?}

if [ "${VPCCTL_VM:-}" != 1 ]; then
    echo "mesh.sh: meant to run inside the VM: python3 tests/vm/run_vm.py --script $0" >&2
    exit 2
fi

# No wireguard-go in this run: whatever the machine has is hidden behind an empty, non-executable
# file (bind mounts in the VM's RAM-backed root; nothing reaches the machine). The lab hosts'
# mount namespaces are copied from this one, so they do not see it either.
: > /run/no-wireguard-go
chmod 0644 /run/no-wireguard-go
IFS=: read -ra path_dirs <<< "$PATH"
for d in "${path_dirs[@]}"; do
    if [ -f "$d/wireguard-go" ] && [ -x "$d/wireguard-go" ]; then
        mount --bind /run/no-wireguard-go "$d/wireguard-go" || echo "mesh.sh: cannot hide $d/wireguard-go" >&2
    fi
done

# The worktree's vpcctl, not whatever the venv has installed (an editable install may point
# elsewhere).
export PYTHONPATH=$REPO
export PYTHONDONTWRITEBYTECODE=1
cd "$REPO" || exit 2
"$PY" "$REPO/tests/vm/scenarios/mesh_driver.py"
rc=$?
echo "mesh.sh: results:"
cat "$OUT/results.txt"
exit $rc
