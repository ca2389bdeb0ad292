"""Benchmark: the idle agent daemon (`vpcctl agent run`) on a 3-host lab mesh (real wireguard-go,
real nftables, StaticDiscovery files). Needs root (network namespaces).

Targets (issue 11, item 7): an idle daemon uses under 1% of one core and at most 60 MB resident.

Method: 3 lab hosts, `[mesh] daemon = true`, one service with a selector; every host announces
``--records`` endpoints (all selected by the service, so every DNAT chain holds them all) and the
daemons converge; then nothing changes for ``--seconds`` while each daemon keeps its two watch
streams and two served streams alive (heartbeats every second) and rewrites its status file
every 2 s. CPU is utime + stime from /proc/PID/stat over that window, divided by the window;
RSS is VmRSS from /proc/PID/status at the end (VmHWM: the peak). Also printed: how long after
the last announcement every host held every record (the exchange plus consumers, one shot).

With ``--metrics`` the same daemons are measured twice in one run: first without metrics (the
baseline), then after ``[mesh] metrics = "127.0.0.1:9586"`` is applied and every host's endpoint
has been scraped once (prometheus_client loaded, its HTTP thread running).

    python bench/daemon.py [--seconds 30] [--records 50] [--metrics]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import Lab  # noqa: E402
from tests.lab.mesh import Mesh  # noqa: E402
from vpcctl.admin import edits  # noqa: E402
from vpcctl.core.model import parse_portspec  # noqa: E402

HOSTS = ("h1", "h2", "h3")


def _proc(pid: int) -> tuple[float, int, int]:
    """(cpu seconds, VmRSS kB, VmHWM kB) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {
        ln.split(":")[0]: int(ln.split()[1])
        for ln in status.splitlines()
        if ln.startswith(("VmRSS", "VmHWM"))
    }
    return ticks / os.sysconf("SC_CLK_TCK"), kb["VmRSS"], kb["VmHWM"]


def _mesh(lab: Lab) -> Mesh:
    mesh = Mesh(lab)
    mesh.change(lambda inv: replace(inv, mesh=replace(inv.mesh, daemon=True)))
    for h in HOSTS:
        mesh.add_host(h)
    mesh.add_vpc("prod", "10.110.0.0/16")
    ports = (parse_portspec("http=80", "t"),)
    sel = (("app", "web"),)
    mesh.change(lambda inv: edits.add_service(inv, "web", "prod", ports, (), selector=sel))
    for h in HOSTS:  # StaticDiscovery (dockerd may be installed here)
        lab.run(mesh.hosts[h], ["sh", "-c", "echo [] > /etc/vpcctl/endpoints.json"])
    mesh.apply_all()
    return mesh


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what} within {timeout:g} s")
        time.sleep(0.05)


def _all_reachable(mesh: Mesh) -> bool:
    for h in HOSTS:
        out = mesh.agent(mesh.hosts[h], "status", "--json", check=False).stdout
        peers = json.loads(out).get("daemon", {}).get("peers") if out else None
        if not peers or not all(p["reachable"] for p in peers):
            return False
    return True


def _converged(mesh: Mesh, total: int) -> bool:
    for h in HOSTS:
        out = mesh.lab.run(mesh.hosts[h], ["cat", "/etc/vpcctl/live.json"], check=False).stdout
        try:
            if len(json.loads(out)["endpoints"]) != total:
                return False
        except ValueError:
            return False
    return True


def _announce(mesh: Mesh, records: int) -> float:
    last = 0.0
    for h in HOSTS:
        net = mesh.inv.hosts[h].slices["prod"]
        found = [{"vpc": "prod", "name": f"{h}-web-{i}", "address": str(net[10 + i]),
                  "labels": {"app": "web"}} for i in range(records)]  # fmt: skip
        script = "cat > /etc/vpcctl/e.tmp && mv /etc/vpcctl/e.tmp /etc/vpcctl/endpoints.json"
        mesh.lab.run(mesh.hosts[h], ["sh", "-c", script], input=json.dumps(found))
        last = time.monotonic()
    return last


def _scrape(mesh: Mesh, h: str) -> bool:
    code = "import urllib.request as u; u.urlopen('http://127.0.0.1:9586/metrics', timeout=2)"
    return mesh.lab.run(mesh.hosts[h], [sys.executable, "-c", code], check=False).returncode == 0


def _window(mesh: Mesh, pids: dict[str, int], seconds: float, label: str) -> tuple[float, float]:
    time.sleep(2.0)  # let the last consumer writes settle
    before = {h: _proc(p) for h, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    window = time.monotonic() - t0
    after = {h: _proc(p) for h, p in pids.items()}
    worst_cpu = worst_rss = 0.0
    for h in HOSTS:
        cpu = (after[h][0] - before[h][0]) / window * 100
        rss, hwm = after[h][1] / 1024, after[h][2] / 1024
        worst_cpu, worst_rss = max(worst_cpu, cpu), max(worst_rss, rss)
        print(f"  {label} {h}: idle CPU {cpu:.2f}% of one core, RSS {rss:.1f} MB "
              f"(peak {hwm:.1f} MB) over {window:.1f} s")  # fmt: skip
    return worst_cpu, worst_rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--metrics", action="store_true", help="then measure again with metrics on")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        mesh = _mesh(lab)
        _wait(lambda: _all_reachable(mesh), "the daemons did not see each other")
        total = args.records * len(HOSTS)
        last = _announce(mesh, args.records)
        _wait(lambda: _converged(mesh, total), "the mesh table did not converge")
        converge = time.monotonic() - last
        pids = {
            h: int(lab.run(mesh.hosts[h], ["cat", "/etc/vpcctl/daemon.pid"]).stdout) for h in HOSTS
        }
        print(
            f"method: 3 lab hosts (wireguard-go), {args.records} records per host "
            f"({total} in every table and DNAT chain), idle for {args.seconds:g} s; CPU = "
            "utime+stime from /proc/PID/stat over the window; RSS = VmRSS (peak VmHWM)"
        )
        print(
            f"convergence after the last announcement (polling each host's live.json): "
            f"{converge:.2f} s"
        )
        worst_cpu, worst_rss = _window(mesh, pids, args.seconds, "metrics off")
        if args.metrics:
            mesh.change(lambda inv: replace(inv, mesh=replace(inv.mesh, metrics="127.0.0.1:9586")))
            mesh.apply_all()
            for h in HOSTS:
                _wait(lambda h=h: _scrape(mesh, h), f"{h}: no metrics")  # type: ignore[misc]
            cpu, rss = _window(mesh, pids, args.seconds, "metrics on (scraped once)")
            worst_cpu, worst_rss = max(worst_cpu, cpu), max(worst_rss, rss)
        ok = worst_cpu < 1.0 and worst_rss <= 60
        print(
            f"targets: CPU < 1% ({worst_cpu:.2f}%), RSS <= 60 MB ({worst_rss:.1f} MB): "
            f"{'met' if ok else 'NOT met'}"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
