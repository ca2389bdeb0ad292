#!/bin/bash
# The data-plane bench (bench/dataplane.py) inside the VM made by tests/vm/run_vm.py: kernel
# WireGuard and routing "ipip" (not part of the CI stage; `python bench/dataplane.py --vm` runs it).
# $BENCH_ARGS are passed on; the result comes back as $VPCCTL_VM_OUT/dataplane.json.
set -u
OUT=${VPCCTL_VM_OUT:-/out}
PY=${VPCCTL_PYTHON:-python3}
REPO=${VPCCTL_REPO:?}
if [ "${VPCCTL_VM:-}" != 1 ]; then
    echo "dataplane.sh: meant to run inside the VM: python3 bench/dataplane.py --vm" >&2
    exit 2
fi
# kernel WireGuard only: hide wireguard-go (as mesh.sh does; bind mounts in the VM's RAM root)
: > /run/no-wireguard-go
chmod 0644 /run/no-wireguard-go
IFS=: read -ra path_dirs <<< "$PATH"
for d in "${path_dirs[@]}"; do
    if [ -f "$d/wireguard-go" ] && [ -x "$d/wireguard-go" ]; then
        mount --bind /run/no-wireguard-go "$d/wireguard-go"
    fi
done
export PYTHONPATH=$REPO PYTHONDONTWRITEBYTECODE=1
cd "$REPO" || exit 2
# shellcheck disable=SC2086
"$PY" bench/dataplane.py --routing ipip ${BENCH_ARGS:-} --json-out "$OUT/dataplane.json" \
    > "$OUT/dataplane.txt" 2> "$OUT/dataplane.err"
rc=$?
cat "$OUT/dataplane.txt"; tail -n 20 "$OUT/dataplane.err"
exit $rc
