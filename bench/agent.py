"""Benchmark: `vpcctl agent apply` of a 100-peer HostSpec on a fresh lab host, then a no-change
apply, each as a whole process (python start-up included). Needs root (network namespaces).

Targets (issue 3): fresh apply <= 2 s, no-change apply <= 0.3 s.
Baselines measured in the same run: `python -c pass` (interpreter start-up) and the same 100 peers
configured by hand with `wg setconf` on a fresh wireguard-go device.

    python bench/agent.py [--peers 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import Lab  # noqa: E402
from vpcctl.admin import edits as ops  # noqa: E402
from vpcctl.admin.render import render, wg_quick  # noqa: E402
from vpcctl.core.keys import PrivateKey  # noqa: E402
from vpcctl.core.model import SshTarget  # noqa: E402
from vpcctl.core.spec import to_json  # noqa: E402

ENV = {"PYTHONPATH": str(ROOT)}
INPROC = """
import sys, time
from pathlib import Path
from vpcctl.host.agent import StateDir, apply
from vpcctl.core.spec import from_json
from vpcctl.host.kernel import LinuxSystem
import vpcctl.host.netlink, vpcctl.host.wguapi  # imports are the start-up floor, measured separately
spec = from_json(Path(sys.argv[1]).read_text(), "spec")
t = time.perf_counter()
system = LinuxSystem()
result = apply(spec, system, StateDir(Path("/etc/vpcctl")))
system.close()
assert result.plan.empty
print(time.perf_counter() - t)
"""


def timed(
    lab: Lab, host: object, argv: list[str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    res = lab.run(host, argv, env=ENV, timeout=120)  # type: ignore[arg-type]
    return time.perf_counter() - t, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    fresh: list[float] = []
    nochange: list[float] = []
    baseline_wg: list[float] = []
    startup: list[float] = []
    imports: list[float] = []
    cli_floor: list[float] = []
    inproc: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        for run in range(args.runs):
            host = lab.add_host(f"b{run}")
            key = json.loads(lab.run(host, [py, "-m", "vpcctl", "agent", "keygen", "--json"],
                                     env=ENV).stdout)["public_key"]  # fmt: skip
            inv = ops.new("bench", IPv4Network("10.90.0.0/22"), port=51820, interface="vpc0",
                          domain="vpc.internal", routing="wireguard")  # fmt: skip
            inv = ops.add_host(inv, "me", SshTarget("192.0.2.1"), public_key=key)
            inv = ops.add_vpc(inv, "prod", IPv4Network("10.100.0.0/16"))
            for i in range(args.peers):
                inv = ops.add_host(
                    inv, f"p{i}", SshTarget(f"198.51.100.{i % 250 + 1}"),
                    endpoint=f"198.51.100.{i % 250 + 1}:{51820 + i}",
                    public_key=PrivateKey.generate().public_key(),
                )  # fmt: skip
            spec = render(inv, "me")
            assert len(spec.peers) == args.peers
            path = lab.workdir / f"spec{run}.json"
            path.write_text(to_json(spec))
            t, res = timed(lab, host, [py, "-m", "vpcctl", "agent", "apply", str(path), "--json"])
            out = json.loads(res.stdout)
            assert out["changed"] and out["applied"] > args.peers, out
            fresh.append(t)
            t, res = timed(lab, host, [py, "-m", "vpcctl", "agent", "apply", str(path), "--json"])
            assert json.loads(res.stdout)["up_to_date"]
            nochange.append(t)
            t, _ = timed(lab, host, [py, "-c", "pass"])
            startup.append(t)
            t, _ = timed(lab, host, [py, "-c", "import pyroute2"])
            imports.append(t)
            t, _ = timed(lab, host, [py, "-m", "vpcctl", "--version"])
            cli_floor.append(t)
            res = lab.run(host, [py, "-c", INPROC, str(path)], env=ENV)
            inproc.append(float(res.stdout.strip()))
            # baseline: the same peers by hand with wg setconf on a fresh wireguard-go device
            conf = lab.workdir / f"wg{run}.conf"
            text = wg_quick(spec, private_key=PrivateKey.generate().to_base64())
            lines = [ln for ln in text.splitlines()
                     if not ln.startswith(("Address", "MTU", "PostUp", "Table", "ListenPort"))]  # fmt: skip
            conf.write_text("\n".join(lines) + "\n")
            t, _ = timed(lab, host, ["sh", "-c", f"wireguard-go wg9 2>/dev/null && wg setconf wg9 {conf} && "
                                               "ip link set wg9 up"])  # fmt: skip
            baseline_wg.append(t)

    def row(name: str, values: list[float], target: float | None) -> None:
        best = min(values)
        verdict = "" if target is None else ("PASS" if best <= target else "MISS")
        tgt = "" if target is None else f"target <= {target:.2f} s"
        print(f"{name:<52} best {best:6.3f} s  median {sorted(values)[len(values) // 2]:6.3f} s  "
              f"{tgt:<18} {verdict}")  # fmt: skip

    print(f"agent apply, {args.peers}-peer HostSpec, {args.runs} fresh lab hosts (wireguard-go)")
    row("vpcctl agent apply (fresh host, whole process)", fresh, 2.0)
    row("vpcctl agent apply (no change, whole process)", nochange, 0.3)
    row("  agent work only: observe+plan, imports done", inproc, 0.3)
    row("baseline: python -c pass", startup, None)
    row("baseline: python -c 'import pyroute2'", imports, None)
    row("baseline: vpcctl --version (typer start-up)", cli_floor, None)
    row("baseline: wireguard-go + wg setconf by hand", baseline_wg, None)


if __name__ == "__main__":
    main()
