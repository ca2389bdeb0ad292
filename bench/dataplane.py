"""Benchmark: the data plane (issue 12, item 7). What the VPC path costs against bare WireGuard
and the underlay, between the same two hosts, in the same run. Needs root.

Targets: VPC path TCP throughput >= 0.95 x bare WireGuard; VPC round-trip latency <= 1.10 x
bare WireGuard.

Method:

* two lab hosts (network namespace + private mount namespace each, ``tests/lab/harness.Lab``)
  on the lab's underlay switch, configured by the real agent (``vpcctl agent apply``, the
  HostSpec rendered from an inventory made with ``tests/lab/mesh.Mesh``); one VPC ``prod`` with
  one container on each host (a namespace veth'd into the host's VPC bridge, MTU = the VPC MTU,
  as a Docker network made by the agent has);
* three paths, each from h1's side to h2's side:
  ``vpc``      container on h1 -> container on h2 (bridge, routing, vpcctl's nftables table,
               WireGuard; with routing ``ipip`` also the IPIP tunnel inside WireGuard);
  ``wg``       h1 -> h2's mesh address (bare WireGuard);
  ``underlay`` h1 -> h2's underlay address (no tunnel at all);
* ``--rounds`` rounds (default 5); in each, every path once, the order rotated from round to
  round so that no path always runs first or last: ``iperf3 -c ... -t SECONDS -O 1 -J`` (one TCP
  stream, the first second omitted: slow start), then ``--pings`` pings 20 ms apart
  (``ping -i 0.02``), idle link;
* figures: per path the median over rounds of iperf3's received bits/s, and the median of all
  ping RTT samples; ratios VPC / bare WireGuard against the targets; the 1-minute load average
  before each measurement (the machine is shared: read the figures with it).

In the namespace lab the tunnel is wireguard-go (no kernel module here) and routing is
``wireguard`` (no ipip module); ``--vm`` runs the same measurement inside the kernel VM
(``tests/vm/run_vm.py`` with ``tests/vm/scenarios/dataplane.sh``: kernel WireGuard, routing
``ipip``), where absolute numbers mean little under emulation and the ratios are the point.

    python bench/dataplane.py [--rounds 5] [--seconds 5] [--pings 100] [--json]
    python bench/dataplane.py --quick            # 1 round of 1 s: the smoke the lab test runs
    python bench/dataplane.py --vm [--rounds 3]  # kernel WireGuard + ipip in the VM
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import Lab, LabNode  # noqa: E402
from tests.lab.mesh import Mesh, wait_ping  # noqa: E402

PATHS = ("vpc", "wg", "underlay")
PORT = 5201
TARGET_THROUGHPUT = 0.95  # VPC >= this x bare WireGuard
TARGET_LATENCY = 1.10  # VPC <= this x bare WireGuard
WIREGUARD: dict[str, str] = {}  # what build() found: the WireGuard backend of the hosts
_RTT = re.compile(r"time=([0-9.]+) ms")


@dataclass
class Path_:
    """One path: iperf3/ping from ``client`` to ``address`` (served in ``server``)."""

    name: str
    client: LabNode
    server: LabNode
    address: str
    mbps: list[float] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


def build(lab: Lab, routing: str) -> dict[str, Path_]:
    """Two hosts, one VPC, one container on each, applied by the real agent."""
    mesh = Mesh(lab, routing=routing)
    h1, h2 = mesh.add_host("h1"), mesh.add_host("h2")
    mesh.add_vpc("prod", "10.100.0.0/16")
    slow = 900 if os.environ.get("VPCCTL_VM") == "1" else 120  # Python under TCG: minutes
    for _ in range(2):  # the bridges first, then the containers on them (and their names)
        for name, host in mesh.hosts.items():
            res = mesh.agent(host, "apply", str(mesh.spec_file(name)), "--json", check=False,
                             timeout=slow)  # fmt: skip
            if res.returncode != 0:
                raise SystemExit(f"agent apply on {name} failed: {res.stderr}")
        if "c1" not in lab.containers:
            c1 = mesh.add_container("prod", "c1", "h1", mtu=True)
            c2 = mesh.add_container("prod", "c2", "h2", mtu=True)
    inv = mesh.inv
    mesh_h2 = str(inv.hosts["h2"].address)
    for who, dst in ((h1, mesh_h2), (c1, c2.ip)):
        if not wait_ping(lab, who, dst, timeout=60):
            raise SystemExit(f"{who.name} cannot ping {dst}: the mesh did not come up")
    kind = lab.run(h1, ["ip", "-d", "-o", "link", "show", "dev", "vpc0"], check=False).stdout
    WIREGUARD["backend"] = "kernel" if " wireguard " in kind else "wireguard-go (tun)"
    return {
        "vpc": Path_("vpc", c1, c2, c2.ip),
        "wg": Path_("wg", h1, h2, mesh_h2),
        "underlay": Path_("underlay", h1, h2, h2.underlay_ip),
    }


def iperf(lab: Lab, p: Path_, seconds: float) -> float:
    """One iperf3 run: received Mbit/s."""
    omit = 1 if seconds >= 3 else 0
    res = lab.run(p.client, ["iperf3", "-c", p.address, "-p", str(PORT), "-t", str(seconds),
                             "-O", str(omit), "-J"], check=False, timeout=seconds + 60)  # fmt: skip
    try:
        data = json.loads(res.stdout)
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"iperf3 {p.name}: {res.stdout[-500:]} {res.stderr[-500:]}") from exc


def pings(lab: Lab, p: Path_, count: int) -> list[float]:
    """``count`` ping RTTs in ms, 20 ms apart."""
    res = lab.run(p.client, ["ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1", p.address],
                  check=False, timeout=count * 0.02 + 30)  # fmt: skip
    return [float(x) for x in _RTT.findall(res.stdout)]


def measure(lab: Lab, paths: dict[str, Path_], rounds: int, seconds: float, count: int) -> None:
    servers = {id(p.server): p.server for p in paths.values()}
    procs = [lab.popen(s, ["iperf3", "-s", "-p", str(PORT)]) for s in servers.values()]
    for s in servers.values():  # wait until each server listens
        deadline = time.monotonic() + 30
        while f":{PORT}" not in lab.run(s, ["ss", "-Hltn"], check=False).stdout:
            if time.monotonic() > deadline:
                raise SystemExit(f"iperf3 -s did not start in {s.name}")
            time.sleep(0.1)
    try:
        for r in range(rounds):
            order = PATHS[r % 3 :] + PATHS[: r % 3]
            for name in order:
                p = paths[name]
                p.loads.append(os.getloadavg()[0])
                p.mbps.append(iperf(lab, p, seconds))
                p.rtts.extend(pings(lab, p, count))
                print(f"round {r + 1}/{rounds} {name:9} {p.mbps[-1]:8.1f} Mbit/s  "
                      f"load {p.loads[-1]:.2f}", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for proc in procs:
            lab.kill(proc)


def summary(paths: dict[str, Path_], meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": meta, "paths": {}}
    for name, p in paths.items():
        out["paths"][name] = {
            "mbps": p.mbps,
            "mbps_median": statistics.median(p.mbps) if p.mbps else None,
            "rtt_ms_median": statistics.median(p.rtts) if p.rtts else None,
            "rtt_samples": len(p.rtts),
            "load": p.loads,
        }
    v, w = out["paths"]["vpc"], out["paths"]["wg"]
    tp = v["mbps_median"] / w["mbps_median"] if v["mbps_median"] and w["mbps_median"] else None
    lat = (
        v["rtt_ms_median"] / w["rtt_ms_median"]
        if v["rtt_ms_median"] and w["rtt_ms_median"]
        else None
    )
    out["ratios"] = {"throughput": tp, "latency": lat}
    out["targets"] = {
        "throughput": {"min": TARGET_THROUGHPUT, "met": tp is not None and tp >= TARGET_THROUGHPUT},
        "latency": {"max": TARGET_LATENCY, "met": lat is not None and lat <= TARGET_LATENCY},
    }
    return out


def report(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        f"data plane: {m['where']}, WireGuard {m.get('wireguard')}, routing {m['routing']}, "
        f"{m['rounds']} rounds x "
        f"{m['seconds']} s iperf3 (1 TCP stream) + {m['pings']} pings per path, interleaved;",
        f"  {m['cpus']} CPUs, load average {m['load_before']:.2f} before, "
        f"{m['load_after']:.2f} after",
        f"{'path':10} {'Mbit/s (median)':>16} {'per round':>36} {'RTT ms (median)':>16}  load",
    ]
    for name in PATHS:
        p = res["paths"][name]
        rounds = " ".join(f"{x:.0f}" for x in p["mbps"])
        loads = " ".join(f"{x:.1f}" for x in p["load"])
        lines.append(f"{name:10} {p['mbps_median']:16.1f} {rounds:>36} "
                     f"{p['rtt_ms_median']:16.3f}  {loads}")  # fmt: skip
    r, t = res["ratios"], res["targets"]
    ok = {True: "met", False: "MISSED"}
    lines.append(f"VPC / bare WireGuard throughput: {r['throughput']:.3f} "
                 f"(target >= {TARGET_THROUGHPUT}: {ok[t['throughput']['met']]})")  # fmt: skip
    lines.append(f"VPC / bare WireGuard latency:    {r['latency']:.3f} "
                 f"(target <= {TARGET_LATENCY}: {ok[t['latency']['met']]})")  # fmt: skip
    u = res["paths"]["underlay"]
    w = res["paths"]["wg"]
    lines.append(f"bare WireGuard / underlay throughput: {w['mbps_median'] / u['mbps_median']:.3f} "
                 "(the cost of the tunnel itself, for scale)")  # fmt: skip
    return "\n".join(lines)


def run_here(args: argparse.Namespace) -> dict[str, Any]:
    where = "kernel VM (kernel WireGuard)" if os.environ.get("VPCCTL_VM") == "1" else (
        "namespace lab (wireguard-go)")  # fmt: skip
    meta = {"where": where, "routing": args.routing, "rounds": args.rounds,
            "seconds": args.seconds, "pings": args.pings, "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0]}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="vpcctl-bench-dp-") as tmp,
        Lab(Path(tmp) / "lab") as lab,
    ):
        paths = build(lab, args.routing)
        measure(lab, paths, args.rounds, args.seconds, args.pings)
    meta["load_after"] = os.getloadavg()[0]
    meta["wireguard"] = WIREGUARD.get("backend", "?")
    return summary(paths, meta)


def run_vm(args: argparse.Namespace) -> dict[str, Any]:
    """The same measurement inside the kernel VM; its JSON comes back through /out."""
    out = Path(tempfile.mkdtemp(prefix="vpcctl-bench-dp-vm-"))
    env = [f"BENCH_ARGS=--rounds {args.rounds} --seconds {args.seconds} --pings {args.pings}"]
    before = os.getloadavg()[0]
    cmd = [sys.executable, str(ROOT / "tests/vm/run_vm.py"), "--script",
           str(ROOT / "tests/vm/scenarios/dataplane.sh"), "--out", str(out), "--timeout", "1500",
           *(x for e in env for x in ("--env", e))]  # fmt: skip
    rc = subprocess.run(cmd, check=False).returncode
    result = out / "dataplane.json"
    if rc != 0 or not result.exists():
        raise SystemExit(f"the VM run failed (exit {rc}); see {out}/console.log")
    data: dict[str, Any] = json.loads(result.read_text())
    # the loads in the VM's figures are the VM's own; the machine's, around the whole run:
    data["meta"]["where"] += f" (machine load {before:.2f} before, {os.getloadavg()[0]:.2f} after)"
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pings", type=int, default=100)
    ap.add_argument("--routing", choices=("wireguard", "ipip"), default=None,
                    help="default: wireguard in the lab (no ipip module), ipip in the VM")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s and 5 pings")
    ap.add_argument("--vm", action="store_true", help="run in the kernel VM")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.pings = 1, 1.0, 5
    in_vm = os.environ.get("VPCCTL_VM") == "1"
    if args.routing is None:
        args.routing = "ipip" if (in_vm or args.vm) else "wireguard"
    if min(args.rounds, args.pings) < 1 or args.seconds < 1:
        ap.error("--rounds and --pings must be >= 1, --seconds >= 1")
    print(__doc__.split("\n\n    python")[0], file=sys.stderr)
    res = run_vm(args) if args.vm else run_here(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2) if args.json else report(res))


if __name__ == "__main__":
    main()
