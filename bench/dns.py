#!/usr/bin/env python3
"""Benchmark: vpcctl's resolver against dnsmasq, same machine, same run.

    python bench/dns.py [--seconds 5] [--rounds 5]

Both servers answer the same 1,000 names (``cN.prod.vpc.internal``, TTL 5) on 127.0.0.x ports,
pinned to CPU 0 (``taskset -c 0``); dnsperf runs pinned to CPU 1 and asks the names in random
order (a query file of 100,000 random picks). Figures, per round and the median:

* queries/s at full speed (dnsperf -q 200), and queries lost (target: >= 0.9 x dnsmasq, 0 lost),
  with each server's CPU time per answered query (user + system, from /proc): on a machine
  where other work competes for the CPUs, queries/s swings from round to round, CPU per query
  much less;
* average latency at a fixed 10,000 queries/s (dnsperf -Q 10000; target: <= 1.5 x dnsmasq);
* VmRSS of our server with a 10,000-name zone, after every name was asked once (<= 60 MB).

Needs: dnsperf, dnsmasq (/usr/sbin/dnsmasq), taskset, 2 CPUs. Nothing leaves 127.0.0.0/8:
upstream forwarding points at a closed port on 127.0.0.9 and is never used.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dns_helpers import vpc_doc, zone_doc  # noqa: E402

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
OURS_ADDR, DNSMASQ_ADDR = "127.0.0.2", "127.0.0.3"
NAMES, BIG_NAMES = 1_000, 10_000
QPS_TARGET, LATENCY_TARGET, RSS_TARGET_MB = 0.9, 1.5, 60.0


def free_port(addr: str) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((addr, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((addr, port))
                except OSError:
                    continue
            return port
    raise SystemExit(f"no free port on {addr}")


def ip_of(i: int) -> str:
    n = (10 << 24) | (100 << 16) | (i + 2)
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def zone_json(count: int) -> str:
    containers = {f"c{i}": ip_of(i) for i in range(count)}
    return json.dumps(zone_doc(vpc_doc("prod", "10.100.0.0/16", containers)))


def wait_udp(addr: str, port: int, name: str, timeout: float = 30.0) -> None:
    """Until the server answers ``name`` with an address (dig prints errors on stdout too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["dig", f"@{addr}", "-p", str(port), "+short", "+tries=1", "+time=1", name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", out):
            return
        time.sleep(0.2)
    raise SystemExit(f"server on {addr}:{port} did not answer {name}")


@dataclass
class Perf:
    qps: float
    lost: int
    sent: int
    latency_ms: float
    cpu_us: float = 0.0  # server CPU time (user + system) per completed query


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(addr: str, port: int, queries: Path, *extra: str, pid: int = 0) -> Perf:
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["taskset", "-c", "1", "dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def grab(label: str) -> float:
        m = re.search(rf"{label}:\s+([0-9.]+)", out)
        if m is None:
            raise SystemExit(f"dnsperf output without {label!r}:\n{out}")
        return float(m.group(1))

    done = grab("Queries completed")
    return Perf(
        qps=grab("Queries per second"),
        lost=int(grab("Queries lost")),
        sent=int(grab("Queries sent")),
        latency_ms=grab(r"Average Latency \(s\)") * 1000,
        cpu_us=(cpu_seconds(pid) - before) / max(done, 1) * 1e6 if pid else 0.0,
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_ours(work: Path, zone: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(zone)]
    argv += ["--listen", f"{OURS_ADDR}:{port}", "--upstream", "127.0.0.9:9"]
    log = (work / "ours.log").open("wb")
    return subprocess.Popen(["taskset", "-c", "0", *argv], env=env, stdout=log, stderr=log)


def start_dnsmasq(work: Path, hosts: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv"]
    argv += [f"--addn-hosts={hosts}", f"--port={port}", f"--listen-address={DNSMASQ_ADDR}"]
    argv += ["--bind-interfaces", "--local-ttl=5", "--cache-size=10000", "--pid-file="]
    log = (work / "dnsmasq.log").open("wb")
    return subprocess.Popen(["taskset", "-c", "0", *argv], stdout=log, stderr=log)


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="length of each dnsperf run")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median is reported)")
    args = ap.parse_args()
    for tool in ("dnsperf", "taskset", "dig"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool}")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs: server and dnsperf share one", file=sys.stderr)
    rng = random.Random(1)
    load_before = os.getloadavg()[0]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="vpcctl-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # dnsmasq reads its hosts file as user nobody
        zone = work / "zone.json"
        zone.write_text(zone_json(NAMES))
        names = [f"c{i}.prod.vpc.internal" for i in range(NAMES)]
        hosts = work / "hosts"
        hosts.write_text("".join(f"{ip_of(i)} {n}\n" for i, n in enumerate(names)))
        queries = work / "queries"
        queries.write_text("".join(f"{rng.choice(names)} A\n" for _ in range(100_000)))
        try:
            ours_port, dm_port = free_port(OURS_ADDR), free_port(DNSMASQ_ADDR)
            ours = start_ours(work, zone, ours_port)
            dm = start_dnsmasq(work, hosts, dm_port)
            procs += [ours, dm]
            wait_udp(OURS_ADDR, ours_port, names[0])
            wait_udp(DNSMASQ_ADDR, dm_port, names[0])
            targets = {
                "vpcctl": (OURS_ADDR, ours_port, ours.pid),
                "dnsmasq": (DNSMASQ_ADDR, dm_port, dm.pid),
            }
            for addr, port, _pid in targets.values():  # warm-up: every name asked once or more
                dnsperf(addr, port, queries, "-l", "2")
            full: dict[str, list[Perf]] = {k: [] for k in targets}
            paced: dict[str, list[Perf]] = {k: [] for k in targets}
            s = str(args.seconds)
            for r in range(args.rounds):
                for name, (addr, port, pid) in targets.items():
                    full[name].append(dnsperf(addr, port, queries, "-l", s, "-q", "200", pid=pid))
                    paced[name].append(dnsperf(addr, port, queries, "-l", s, "-Q", "10000"))
                    f, p = full[name][-1], paced[name][-1]
                    print(
                        f"round {r + 1} {name:8} {f.qps:10.0f} q/s  lost {f.lost:5d}/{f.sent:<8d}"
                        f" server CPU {f.cpu_us:5.2f} us/query"
                        f"   @10k q/s: {p.latency_ms:6.3f} ms avg, lost {p.lost}",
                        flush=True,
                    )
            ours_rss_small = rss_mb(ours.pid)
            for p in (ours, dm):
                p.terminate()
                p.wait(10)
            procs.clear()

            # memory with a 10,000-name zone, every name asked once
            big = work / "big.json"
            big.write_text(zone_json(BIG_NAMES))
            all_q = work / "all-queries"
            all_q.write_text("".join(f"c{i}.prod.vpc.internal A\n" for i in range(BIG_NAMES)))
            port = free_port(OURS_ADDR)
            ours = start_ours(work, big, port)
            procs.append(ours)
            wait_udp(OURS_ADDR, port, "c9999.prod.vpc.internal")
            rss_loaded = rss_mb(ours.pid)
            dnsperf(OURS_ADDR, port, all_q, "-n", "1", "-q", "20")
            rss_used = rss_mb(ours.pid)
        finally:
            for p in procs:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    med = {k: statistics.median(x.qps for x in v) for k, v in full.items()}
    lost = {k: sum(x.lost for x in v) for k, v in full.items()}
    lat = {k: statistics.median(x.latency_ms for x in v) for k, v in paced.items()}
    qps_ratio = med["vpcctl"] / med["dnsmasq"]
    lat_ratio = lat["vpcctl"] / lat["dnsmasq"]
    cpu = {k: statistics.median(x.cpu_us for x in v) for k, v in full.items()}
    print()
    print(f"median of {args.rounds} rounds, {args.seconds} s each, {NAMES} names asked at random")
    load = max(load_before, os.getloadavg()[0])
    if load > 2.5:  # the bench itself keeps about 2 CPUs busy
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} CPUs: other work competed with the"
            " servers, so queries/s and latency are noisy; CPU per query is the steadier figure"
        )
    print(
        f"{verdict(qps_ratio >= QPS_TARGET and lost['vpcctl'] == 0)} throughput: vpcctl "
        f"{med['vpcctl']:.0f} q/s (lost {lost['vpcctl']}), dnsmasq {med['dnsmasq']:.0f} q/s "
        f"(lost {lost['dnsmasq']}): {qps_ratio:.2f} x dnsmasq (target >= {QPS_TARGET}, 0 lost)"
    )
    print(
        f"     server CPU per query: vpcctl {cpu['vpcctl']:.2f} us, dnsmasq {cpu['dnsmasq']:.2f} us"
        f" ({cpu['dnsmasq'] / cpu['vpcctl']:.2f} x dnsmasq's efficiency; less sensitive to"
        " other load on the machine than queries/s)"
    )
    print(
        f"{verdict(lat_ratio <= LATENCY_TARGET)} latency at 10,000 q/s: vpcctl "
        f"{lat['vpcctl']:.3f} ms, dnsmasq {lat['dnsmasq']:.3f} ms: {lat_ratio:.2f} x dnsmasq "
        f"(target <= {LATENCY_TARGET})"
    )
    print(
        f"{verdict(rss_used <= RSS_TARGET_MB)} memory, {BIG_NAMES:,}-name zone: VmRSS "
        f"{rss_loaded:.1f} MB loaded, {rss_used:.1f} MB after every name was asked "
        f"(target <= {RSS_TARGET_MB:.0f} MB; {NAMES:,}-name zone after the runs: "
        f"{ours_rss_small:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
