"""Benchmark: how fast names and service backends follow real Docker containers across the mesh
(issue 11, item 7). Needs root: 3 lab hosts (network namespaces, real wireguard-go), one real
dockerd and the real agent daemon (`[mesh] daemon = true`, Docker discovery) on each.

Targets: p95 <= 1 s and max <= 2 s for both delays below; a cut-off host's backends gone from
every other host within 10 s.

Method:

* one service ``bench`` (``--selector app=bench``, port 80) in VPC ``prod``;
* ``--cycles`` times (default 50, i.e. 100 events), on the hosts in turn: ``docker run -d
  --network vpc-prod --label app=bench`` a container (no HEALTHCHECK, so ready at once), then,
  once every host has it, ``docker stop -t 0`` it;
* **start delay**: from ``docker run`` returning until the container's name
  (``NAME.prod.vpc.internal``) resolves to its address through the resolver on every *other*
  host (queried on 127.0.0.1 inside each host, i.e. the host view);
* **stop delay**: from ``docker stop`` returning until the address is in no host's DNAT chain
  (``nft list chain inet vpcctl svc_prod_bench``, all three hosts);
* both are observed by one poller process inside each host's network namespace, polling every
  10 ms and stamping CLOCK_MONOTONIC (shared with this process), so the figures include up to
  ~10 ms of polling plus one ``nft`` run;
* **cut-off**: two backends run on h3, then h3's underlay link goes down (its daemon and dockerd
  keep running, nobody hears them): the time until both are gone from h1's and h2's chains, and
  after the link is back, until they return;
* **idle daemon**: after the events, CPU (utime + stime from /proc over ``--idle`` seconds) and
  VmRSS of each host's daemon, now following Docker's event stream.

    python bench/discovery.py [--cycles 50] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.docker import IMAGE, DockerLab, build_tarball, docker_problem  # noqa: E402
from tests.lab.harness import Lab  # noqa: E402
from tests.lab.mesh import Mesh, wait_ping  # noqa: E402
from vpcctl.admin import edits  # noqa: E402
from vpcctl.core.model import parse_portspec  # noqa: E402

HOSTS = ("h1", "h2", "h3")
CHAIN = ("nft", "list", "chain", "inet", "vpcctl", "svc_prod_bench")

# Runs inside one lab host: reads "resolve NAME IP" / "gone IP" / "has IP" lines, polls every
# 10 ms until it holds, prints "ok <CLOCK_MONOTONIC>" (or "timeout").
POLLER = r"""
import re, subprocess, sys, time
from dnslib import DNSRecord
CHAIN = CHAIN_ARGV
def resolves(name, ip):
    try:
        reply = DNSRecord.parse(DNSRecord.question(name).send("127.0.0.1", 53, timeout=0.2))
    except Exception:
        return False
    return any(str(r.rdata) == ip for r in reply.rr)
def chain():
    text = subprocess.run(CHAIN, capture_output=True, text=True).stdout
    return set(re.findall(r"\b(\d+\.\d+\.\d+\.\d+)\b", text))
for line in sys.stdin:
    verb, *args = line.split()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if verb == "resolve" and resolves(args[0], args[1]):
            break
        if verb == "gone" and all(a not in chain() for a in args):
            break
        if verb == "has" and all(a in chain() for a in args):
            break
        time.sleep(0.01)
    else:
        print("timeout", flush=True)
        continue
    print("ok", time.monotonic(), flush=True)
""".replace("CHAIN_ARGV", repr(CHAIN))


class Poller:
    def __init__(self, lab: Lab, host: object) -> None:
        self.proc = lab.popen(
            host,  # type: ignore[arg-type]
            [sys.executable, "-c", POLLER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(ROOT)},
        )
        self.lock = threading.Lock()

    def ask(self, *words: str) -> float | None:
        """Blocks until the host saw it; its CLOCK_MONOTONIC stamp, or None on timeout."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(" ".join(words) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().split()
        return float(answer[1]) if answer and answer[0] == "ok" else None


def all_of(pollers: dict[str, Poller], hosts: list[str], *words: str) -> list[float | None]:
    out: dict[str, float | None] = {}

    def one(h: str) -> None:
        out[h] = pollers[h].ask(*words)

    threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [out[h] for h in hosts]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def line(label: str, values: list[float], failed: int) -> str:
    if not values:
        return f"{label}: no successful events ({failed} timed out)"
    return (
        f"{label}: n={len(values)} p50={statistics.median(values):.3f}s "
        f"p95={pct(values, 0.95):.3f}s max={max(values):.3f}s"
        + (f"  ({failed} timed out after 30 s)" if failed else "")
    )


def daemon_pid(mesh: Mesh, host: str) -> int:
    st = mesh.status(host)["daemon"]
    return int(st["pid"])


def proc_usage(pid: int) -> tuple[float, int]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(
        int(ln.split()[1])
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ln.startswith("VmRSS")
    )
    return cpu, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50, help="start+stop pairs (2 events each)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    args = ap.parse_args()
    if os.geteuid() != 0 or docker_problem():
        print(f"needs root and Docker: {docker_problem() or 'not root'}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n    python")[0])
    print()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = build_tarball(Path(tmp) / "vpclab-rootfs.tar")
        with Lab(Path(tmp) / "lab") as lab, DockerLab(lab, tarball) as dl:
            return run(lab, dl, args)


def run(lab: Lab, dl: DockerLab, args: argparse.Namespace) -> int:
    t_setup = time.monotonic()
    mesh = Mesh(lab)
    mesh.change(lambda inv: replace(inv, mesh=replace(inv.mesh, daemon=True)))
    for name in HOSTS:
        mesh.add_host(name)
    mesh.add_vpc("prod", "10.130.0.0/16")
    mesh.change(
        lambda inv: edits.add_service(
            inv, "bench", "prod", (parse_portspec("http=80", "t"),), (),
            selector=(("app", "bench"),),
        )
    )  # fmt: skip
    d = {}
    for name in HOSTS:
        d[name] = dl.start(mesh.hosts[name])
        mesh.env[name] = d[name].env
    mesh.apply_all()
    for a in HOSTS:
        for b in HOSTS:
            if a != b:
                assert wait_ping(lab, mesh.hosts[a], str(mesh.inv.hosts[b].address))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sts = [mesh.status(h).get("daemon") or {} for h in HOSTS]
        if all(s.get("running") and all(p["reachable"] for p in s["peers"]) for s in sts):
            break
        time.sleep(0.2)
    grace = mesh.spec("h1").daemon.grace
    pollers = {h: Poller(lab, mesh.hosts[h]) for h in HOSTS}
    print(f"setup: 3 hosts, dockerd + agent daemon each, {time.monotonic() - t_setup:.1f} s")

    starts: list[float] = []
    stops: list[float] = []
    failed_start = failed_stop = 0
    for i in range(args.cycles):
        host = HOSTS[i % len(HOSTS)]
        others = [h for h in HOSTS if h != host]
        name = f"b{i}"
        d[host].run("--network", "vpc-prod", "--label", "app=bench", "--name", name,
                    IMAGE, "sleep", "100000")  # fmt: skip
        t0 = time.monotonic()
        ip = d[host].ip_of(name, "vpc-prod")
        seen = all_of(pollers, others, "resolve", f"{name}.prod.vpc.internal", ip)
        if None in seen:
            failed_start += 1
        else:
            starts.append(max(s for s in seen if s is not None) - t0)
        all_of(pollers, list(HOSTS), "has", ip)  # in every chain before it stops
        d[host].cli("stop", "-t", "0", name)
        t1 = time.monotonic()
        gone = all_of(pollers, list(HOSTS), "gone", ip)
        if None in gone:
            failed_stop += 1
        else:
            stops.append(max(g for g in gone if g is not None) - t1)
        d[host].cli("rm", name)
        if (i + 1) % 10 == 0:
            print(f"  {2 * (i + 1)} events ...", flush=True)

    print()
    print(f"events: {2 * args.cycles} ({args.cycles} docker run + {args.cycles} docker stop)")
    print(line("docker run -> name resolves on every other host", starts, failed_start))
    print(line("docker stop -> gone from every host's DNAT set ", stops, failed_stop))
    ok = bool(starts and stops) and not failed_start and not failed_stop
    ok = ok and pct(starts, 0.95) <= 1.0 and max(starts) <= 2.0
    ok = ok and pct(stops, 0.95) <= 1.0 and max(stops) <= 2.0

    # cut-off: h3's underlay down
    ips = []
    for n in ("cut-1", "cut-2"):
        d["h3"].run("--network", "vpc-prod", "--label", "app=bench", "--name", n,
                    IMAGE, "sleep", "100000")  # fmt: skip
        ips.append(d["h3"].ip_of(n, "vpc-prod"))
    all_of(pollers, ["h1", "h2"], "has", *ips)
    lab.run(mesh.hosts["h3"], ["ip", "link", "set", "eth0", "down"])
    t2 = time.monotonic()
    gone = all_of(pollers, ["h1", "h2"], "gone", *ips)
    lab.run(mesh.hosts["h3"], ["ip", "link", "set", "eth0", "up"])
    t3 = time.monotonic()
    back = all_of(pollers, ["h1", "h2"], "has", *ips)
    cut = None if None in gone else max(g for g in gone if g is not None) - t2
    ret = None if None in back else max(b for b in back if b is not None) - t3
    print(
        f"cut-off host (underlay down, grace {grace:g} s): its 2 "
        f"backends gone from every other host after "
        + (f"{cut:.2f} s" if cut is not None else "TIMEOUT")
        + "; back after the link returned in "
        + (f"{ret:.2f} s" if ret is not None else "TIMEOUT")
    )
    ok = ok and cut is not None and cut <= 10.0 and ret is not None

    # idle daemons (Docker discovery following the event stream)
    time.sleep(2)
    pids = {h: daemon_pid(mesh, h) for h in HOSTS}
    before = {h: proc_usage(p) for h, p in pids.items()}
    time.sleep(args.idle)
    for h, p in pids.items():
        cpu, rss = proc_usage(p)
        share = 100 * (cpu - before[h][0]) / args.idle
        print(f"idle daemon on {h}: {share:.2f}% of one core over {args.idle:g} s, "
              f"RSS {rss / 1024:.1f} MB")  # fmt: skip
        ok = ok and share < 1.0 and rss <= 60 * 1024

    print()
    print("for scale (documented defaults, not measured here):")
    print("  Kubernetes: a failing pod leaves a Service after ~30 s (readiness probe every 10 s,")
    print("  failureThreshold 3); a lost node is noticed after 40 s or more")
    print("  (node-monitor-grace-period).")
    print("  Tailscale: subnet-router failover takes up to ~15 s.")
    print()
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
