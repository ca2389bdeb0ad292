#!/bin/bash
# Smoke scenario for tests/vm/run_vm.py: the seed's data plane on a real kernel, plain tools only.
#
# Two network namespaces h1 and h2 joined by veth (underlay 192.0.2.1/24 <-> 192.0.2.2/24),
# kernel WireGuard between them (mesh 10.90.0.1/24 <-> 10.90.0.2/24), on each an IPIP tunnel in
# NBMA mode over the mesh address, a dummy holding the VPC slice gateway (10.100.1.1/24,
# 10.100.2.1/24) and routes to the other slice via the other mesh address, onlink.
#
# Writes "PASS name", "FAIL name: output" or "INFO name: ..." lines to $OUT/results.txt and
# exits 1 if any check failed. Runs only inside the VM (it needs wireguard.ko and ipip.ko).
set -u

OUT=${VPCCTL_VM_OUT:-/out}
RESULTS=$OUT/results.txt
PY=${VPCCTL_PYTHON:-python3}

if [ "${VPCCTL_VM:-}" != 1 ]; then
    echo "smoke.sh: meant to run inside the VM: python3 tests/vm/run_vm.py --script $0" >&2
    exit 2
fi

: > "$RESULTS"
failed=0
WORK=$(mktemp -d)
BG_PIDS=()

record() {  # record LINE: to results.txt and to the console
    echo "$1" >> "$RESULTS"
    echo "smoke: $1"
}

check() {  # check NAME CMD...: PASS if CMD succeeds, else FAIL with its output
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        record "PASS $name"
    else
        record "FAIL $name: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-600)"
        failed=1
    fi
}

info() {  # info NAME TEXT
    record "INFO $1: $2"
}

cleanup() {
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    ip netns del h1 2>/dev/null
    ip netns del h2 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# Fails if the counter file (in namespace $1) holds 0.
counter_positive() {
    local v
    v=$(ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3") || return 1
    echo "$1 $2 $3=$v"
    [ "$v" -gt 0 ]
}

# `wg show wg0 transfer` prints "PUBKEY<TAB>RX<TAB>TX"; both must be > 0.
wg_transfer_positive() {
    local line rx tx
    line=$(ip netns exec "$1" wg show wg0 transfer) || return 1
    echo "$1: $line"
    read -r _ rx tx <<< "$line"
    [ "${rx:-0}" -gt 0 ] && [ "${tx:-0}" -gt 0 ]
}

setup() {
    set -e
    ip netns add h1
    ip netns add h2
    ip link add eth0 netns h1 type veth peer name eth0 netns h2
    local i peer
    for i in 1 2; do
        ip -n "h$i" link set lo up
        ip -n "h$i" addr add "192.0.2.$i/24" dev eth0
        ip -n "h$i" link set eth0 up
        wg genkey > "$WORK/key$i"
        wg pubkey < "$WORK/key$i" > "$WORK/pub$i"
    done
    for i in 1 2; do
        peer=$((3 - i))
        ip -n "h$i" link add wg0 type wireguard
        ip netns exec "h$i" wg set wg0 private-key "$WORK/key$i" listen-port 51820 \
            peer "$(cat "$WORK/pub$peer")" endpoint "192.0.2.$peer:51820" \
            allowed-ips "10.90.0.$peer/32" persistent-keepalive 0
        ip -n "h$i" addr add "10.90.0.$i/24" dev wg0
        ip -n "h$i" link set wg0 up
        # NBMA IPIP: no remote; the outer destination is the route's next hop.
        ip -n "h$i" link add vpc-ipip type ipip local "10.90.0.$i"
        ip -n "h$i" link set vpc-ipip up
        ip -n "h$i" link add vpc-gw type dummy
        ip -n "h$i" addr add "10.100.$i.1/24" dev vpc-gw
        ip -n "h$i" link set vpc-gw up
        ip -n "h$i" route add "10.100.$peer.0/24" via "10.90.0.$peer" dev vpc-ipip onlink
    done
    set +e
}

check setup setup

# Underlay capture: WireGuard's UDP must be what crosses eth0 (af_packet is built in).
ip netns exec h1 timeout 60 tcpdump -l -n -i eth0 -c 4 udp port 51820 \
    > "$WORK/tcpdump.txt" 2>&1 &
BG_PIDS+=($!)
TCPDUMP_PID=$!
# tcpdump takes a while to start under emulation: wait until it listens.
for _ in $(seq 100); do grep -q listening "$WORK/tcpdump.txt" && break; sleep 0.2; done

check ping_mesh ip netns exec h1 ping -c 2 -W 5 10.90.0.2
check ping_vpc_over_ipip ip netns exec h1 ping -c 3 -W 5 -I 10.100.1.1 10.100.2.1
check ipip_tx_h1 counter_positive h1 vpc-ipip tx_packets
check ipip_rx_h1 counter_positive h1 vpc-ipip rx_packets
check ipip_rx_h2 counter_positive h2 vpc-ipip rx_packets
info ipip_stats_h1 "$(ip -n h1 -s link show vpc-ipip | tr -s ' \n' ' ')"
check wg_transfer_h1 wg_transfer_positive h1
check wg_transfer_h2 wg_transfer_positive h2
check wg_handshake ip netns exec h1 sh -c 'wg show wg0 latest-handshakes | grep -qv "\s0$"'

wait "$TCPDUMP_PID"
check tcpdump_underlay_udp grep -q 'UDP' "$WORK/tcpdump.txt"
if [ -s "$WORK/tcpdump.txt" ]; then
    info tcpdump_underlay "$(tr -s ' \n' ' ' < "$WORK/tcpdump.txt" | cut -c1-300)"
fi

# nftables: an inet table with numgen DNAT maps (service VIP style), loaded and exercised.
cat > "$WORK/vip.nft" <<'EOF'
table inet vpcsmoke {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr 10.100.9.9 counter dnat ip to numgen inc mod 2 map { 0 : 10.100.2.1, 1 : 10.100.2.1 }
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.100.9.10 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.100.2.1, 1 : 10.100.2.2 } : 8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    fib daddr type local accept
  }
}
EOF
check nft_load_numgen_dnat ip netns exec h1 nft -f "$WORK/vip.nft"
# The VIP is routed like the remote slice; DNAT in the output hook rewrites it to 10.100.2.1.
ip -n h1 route add 10.100.9.9/32 via 10.90.0.2 dev vpc-ipip onlink
check nft_dnat_vip_ping ip netns exec h1 ping -c 2 -W 5 -I 10.100.1.1 10.100.9.9
check nft_dnat_counter sh -c \
    'ip netns exec h1 nft list chain inet vpcsmoke output | grep -q "counter packets [1-9]"'

# A mount namespace made in the VM, entered with plain `nsenter -m` (no -r/-w): the runner
# moves the new root onto / (switch_root style), so this sees the machine's files.
ip netns exec h1 unshare -m --propagation private sleep 300 &
BG_PIDS+=($!)
HOLDER=$!
for _ in $(seq 100); do
    [ "$(readlink "/proc/$HOLDER/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] && break
    sleep 0.1
done
check nsenter_mount_ns nsenter -t "$HOLDER" -m -n sh -c 'test -x /usr/sbin/ip && ip link show wg0'

# Python: every interpreter start costs seconds under emulation, so pyroute2 is imported once:
# the wall time of that process is about what `python3 -c 'import pyroute2'` costs in the VM.
now() { date +%s.%N; }
t0=$(now)
check python_start "$PY" -c pass
t1=$(now)
# Writes "name status detail" lines; bash turns them into checks below.
ip netns exec h1 "$PY" -c '
import sys, time
out = open(sys.argv[1], "w", buffering=1)
t = time.monotonic()
try:
    import pyroute2
except Exception as e:
    print("import_pyroute2 FAIL", repr(e), file=out)
    raise SystemExit(1)
print("import_pyroute2 OK %.2f" % (time.monotonic() - t), file=out)
try:
    from pyroute2 import WireGuard
except Exception as e:
    print("import_wireguard FAIL", repr(e), file=out)
    raise SystemExit(1)
print("import_wireguard OK", file=out)
try:
    port = WireGuard().info("wg0")[0].get_attr("WGDEVICE_A_LISTEN_PORT")
    print("wireguard_info OK listen port", port, file=out)
except Exception as e:
    print("wireguard_info FAIL", repr(e), file=out)
' "$WORK/py.txt" > "$WORK/py-stderr.txt" 2>&1
t2=$(now)
py_line() { grep "^$1 " "$WORK/py.txt"; }
py_ok() { py_line "$1" | grep -q "^$1 OK" || { cat "$WORK/py.txt" "$WORK/py-stderr.txt"; false; }; }
check python_import_pyroute2 py_ok import_pyroute2
check pyroute2_wireguard_import py_ok import_wireguard
info python_timing "$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v py="$PY" \
    -v imp="$(py_line import_pyroute2 | cut -d' ' -f3)" \
    'BEGIN { printf "python=%s: -c pass %.2fs; start + import pyroute2 + WireGuard query %.2fs (the import itself %ss)", py, b - a, c - b, imp }')"
info pyroute2_wireguard_info "$(py_line wireguard_info | cut -d' ' -f2-)"

echo "smoke: results:"
cat "$RESULTS"
exit "$failed"
