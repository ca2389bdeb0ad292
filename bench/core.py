"""Benchmark of the core on a 1,000-host full mesh: `python bench/core.py`.

Prints each figure next to its target, PASS or MISS, and a baseline measured in the same run (a bare
Python loop formatting the same 999,000 peer lines), so that figures from different machines can be
compared. Always exits 0: it measures, it does not gate.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpcctl.admin import edits as ops  # noqa: E402
from vpcctl.admin import inventory  # noqa: E402
from vpcctl.admin.render import render_all  # noqa: E402
from vpcctl.core.keys import PrivateKey  # noqa: E402
from vpcctl.core.model import Host, SshTarget  # noqa: E402
from vpcctl.core.spec import Encoder  # noqa: E402

HOSTS = 1000
PEERS = HOSTS * (HOSTS - 1)
REPEAT = 3
MESH_CIDR = IPv4Network("10.64.0.0/16")  # room for 65,534 hosts
VPC_CIDR = IPv4Network("10.128.0.0/9")  # 32,767 /24 slices + the service range


def best_of(fn: Callable[[], Any], repeat: int = REPEAT) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def build(rng: random.Random) -> inventory.Inventory:
    """1,000 hosts (every one with a public key, every other one with an endpoint), one VPC."""
    inv = ops.new(
        "bench", MESH_CIDR, port=51820, interface="vpc0", domain="vpc.internal", routing="ipip"
    )
    inv = ops.add_vpc(inv, "prod", VPC_CIDR)
    slice_base = int(VPC_CIDR.network_address)
    hosts = {}
    for i in range(HOSTS):
        name = f"host-{i:04d}"
        address = IPv4Address(int(MESH_CIDR.network_address) + 1 + i)
        endpoint = f"{IPv4Address(0xC6120000 + i + 1)}:51820" if i % 2 == 0 else None  # 198.18/15
        hosts[name] = Host(
            name=name,
            ssh=SshTarget(name, "root"),
            address=address,
            endpoint=endpoint,
            public_key=PrivateKey(rng.randbytes(32)).public_key(),
            slices={"prod": IPv4Network((slice_base + (i << 8), 24))},
        )
    inv = replace(inv, hosts=hosts)
    assert inventory.problems(inv) == [], inventory.problems(inv)[:3]
    return inv


def load_validate_render(path: Path) -> int:
    inv = inventory.load(path)  # parse + every cross-object check
    specs = render_all(inv)
    return sum(len(s.peers) for s in specs.values())


def encode_all(specs: dict[str, Any], compact: bool = False) -> int:
    enc = Encoder()
    return sum(len(enc.dumps(s, compact=compact)) for s in specs.values())


def keypairs(n: int = 1000) -> list[str]:
    return [PrivateKey.generate().public_key() for _ in range(n)]


def baseline(keys: list[str]) -> int:
    """The floor for rendering: a bare loop formatting every peer entry of the full mesh."""
    ips = [f"10.64.{i >> 8}.{i & 255}" for i in range(1, HOSTS + 1)]
    total = 0
    for host in range(HOSTS):
        for peer in range(HOSTS):
            if peer != host:
                k, ip = keys[peer], ips[peer]
                total += len(f"[Peer]\nPublicKey = {k}\nAllowedIPs = {ip}/32\n")
    return total


def host_add(path: Path, work: Path, rng: random.Random) -> float:
    """`python -m vpcctl host add` into a fresh copy of the inventory, end to end as a process."""
    copy = work / "copy" / "vpc.toml"
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VPCCTL_INVENTORY", None)
    key = PrivateKey(rng.randbytes(32)).public_key()
    args = [sys.executable, "-m", "vpcctl", "-i", str(copy), "host", "add", "host-new",
            "--ssh", "root@198.19.0.1", "--endpoint", "198.19.0.1:51820", "--public-key", key]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    after = inventory.load(copy)
    assert len(after.hosts) == HOSTS + 1
    assert after.hosts["host-new"].slices["prod"] == IPv4Network("10.131.232.0/24")
    return elapsed


def report(label: str, seconds: float, target: float | None, note: str = "") -> None:
    verdict = "" if target is None else ("PASS" if seconds <= target else "MISS")
    goal = "" if target is None else f"target <= {target:g} s"
    print(f"{label:<44} {seconds:8.3f} s   {goal:<18} {verdict:<4} {note}".rstrip())


def main() -> int:
    rng = random.Random(1000)
    with tempfile.TemporaryDirectory(prefix="vpcctl-bench-") as tmp:
        work = Path(tmp)
        path = work / "vpc.toml"
        inv = build(rng)
        inventory.write_atomic(path, inventory.dump(inv))
        size = path.stat().st_size

        print(f"vpcctl core benchmark: {HOSTS} hosts, full mesh ({PEERS:,} peer entries), "
              f"inventory {size / 1024:.0f} KiB; Python {sys.version.split()[0]}; best of {REPEAT}")  # fmt: skip
        print()

        t_render, peers = best_of(lambda: load_validate_render(path))
        assert peers == PEERS, peers
        specs = render_all(inventory.load(path))
        t_json, json_bytes = best_of(lambda: encode_all(specs), repeat=1)  # slow: one run
        t_wire, wire_bytes = best_of(lambda: encode_all(specs, compact=True), repeat=1)
        t_keys, pubs = best_of(keypairs)
        assert len(set(pubs)) == 1000
        t_base, _ = best_of(lambda: baseline([h.public_key for h in inv.hosts.values()]))  # type: ignore[misc]
        t_add, _ = best_of(lambda: host_add(path, work, rng))

        report("load + validate + render_all", t_render, 0.5, f"{peers:,} peers")
        report("JSON of all 1,000 HostSpecs, indented (1 run)", t_json, None, f"{json_bytes / 2**20:.0f} MiB")  # fmt: skip
        report("JSON of all 1,000 HostSpecs, compact as `up` sends them", t_wire, None, f"{wire_bytes / 2**20:.0f} MiB")  # fmt: skip
        report("1,000 keypairs", t_keys, 0.1)
        report("`python -m vpcctl host add` (process)", t_add, 1.0)
        report("baseline: f-string loop, 999,000 peer lines", t_base, None)
        print()
        print(f"render vs baseline: {t_render / t_base:.2f}x the time of formatting the peer lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
