#!/bin/bash
# CI stage "kernel VM": the vpcctl mesh scenario (kernel WireGuard + routing "ipip") in a QEMU VM
# booted on Debian's kernel, with a hard time limit. Needs root and
#   apt-get install -y --no-install-recommends qemu-system-x86 busybox-static linux-image-amd64 kmod
# plus the project's venv (python -m venv ... && pip install -e '.[dev]'; run_vm.py looks for it in
# $VIRTUAL_ENV, the running venv, REPO/.venv, /tmp/venv, or set VPCCTL_VM_PYTHON).
#
#   tests/vm/ci_stage.sh [OUT_DIR]
#
# Prints every check (PASS/FAIL) and the timings from OUT/results.txt. Exit status: 0 if every check
# passed; 1 with the failing checks' names and output, or if the VM timed out (the whole stage is
# capped at $VPCCTL_VM_TIMEOUT seconds, default 600), crashed or never wrote results.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$(mktemp -d /tmp/vpcctl-vm-ci.XXXXXX)}
LIMIT=${VPCCTL_VM_TIMEOUT:-600}
SCRIPT=${VPCCTL_VM_SCRIPT:-$REPO/tests/vm/scenarios/mesh.sh}
PY_ARGS=()
[ -n "${VPCCTL_VM_PYTHON:-}" ] && PY_ARGS=(--python "$VPCCTL_VM_PYTHON")

mkdir -p "$OUT"
rm -f "$OUT/results.txt"
start=$(date +%s)

# Bytecode for the worktree's modules, made natively: the VM (read-only view of this tree) would
# otherwise compile them under emulation on every run.
python3 -m compileall -q "$REPO/vpcctl" "$REPO/tests" >/dev/null 2>&1 || true

# The qemu part gets the limit minus a margin; `timeout` caps the whole runner (initramfs build
# included) at the limit.
timeout --kill-after=10 "$LIMIT" \
    python3 "$REPO/tests/vm/run_vm.py" --script "$SCRIPT" --out "$OUT" \
    --timeout $((LIMIT - 20)) "${PY_ARGS[@]}"
rc=$?
took=$(( $(date +%s) - start ))

echo
echo "=== kernel VM stage: results ($OUT/results.txt) ==="
if [ -s "$OUT/results.txt" ]; then
    grep -E '^(PASS|FAIL) ' "$OUT/results.txt" | cut -c1-300
    grep -E '^INFO (summary|phase_|join_ping|leave_ping)' "$OUT/results.txt" | cut -c1-600
fi
echo "=== stage wall time ${took}s, runner exit status $rc ==="

fails=$(grep -c '^FAIL ' "$OUT/results.txt" 2>/dev/null) || fails=0
passes=$(grep -c '^PASS ' "$OUT/results.txt" 2>/dev/null) || passes=0
status=0
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "ERROR: the VM stage timed out (limit ${LIMIT}s, $((LIMIT - 20))s of it for the VM;" \
        "${passes} checks had passed); console: $OUT/console.log"
    status=1
elif [ ! -s "$OUT/results.txt" ]; then
    echo "ERROR: the VM wrote no results (runner exit $rc); console tail:"
    tail -n 40 "$OUT/console.log" 2>/dev/null
    status=1
fi
if [ "$fails" -gt 0 ]; then
    echo "ERROR: $fails check(s) failed:"
    grep '^FAIL ' "$OUT/results.txt"
    status=1
elif [ "$status" = 0 ] && [ "$rc" != 0 ]; then
    echo "ERROR: the scenario exited $rc without a FAIL line; console: $OUT/console.log"
    status=1
elif [ "$status" = 0 ] && [ "$passes" = 0 ]; then
    echo "ERROR: no check ran"
    status=1
fi
[ "$status" = 0 ] && echo "OK: $passes checks passed in ${took}s"
exit "$status"
