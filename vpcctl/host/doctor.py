"""`vpcctl agent doctor`: gather this host's facts for :mod:`vpcctl.core.doctor` (the edge).

Facts only, no verdicts: what the kernel has (WireGuard, ipip), whether nft works, forwarding,
the resolver and the agent daemon, every peer's handshake age and a real round trip to its mesh
address (a ping through WireGuard's UDP, and one at the full interface MTU with "don't fragment"),
Docker's networks and the containers' DNS, and this host's clock.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vpcctl import __version__
from vpcctl.core import run
from vpcctl.core.doctor import ping_size
from vpcctl.core.errors import ProgramError
from vpcctl.host.state import StateDir

SYS_IPIP = Path("/sys/module/ipip")


def ping(address: str, size: int | None = None) -> bool:
    """One echo to ``address`` answered within 1 s (``size``: that payload, never fragmented)."""
    argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", address]
    if size is not None:
        argv[1:1] = ["-M", "do", "-s", str(size)]
    try:
        return run.run(argv, timeout=5).ok
    except ProgramError:
        return False


def _nft() -> dict[str, Any]:
    if run.which("nft") is None:
        return {"present": False, "usable": False, "error": "nft not found"}
    try:
        done = run.run(["nft", "list", "tables"], timeout=10)
    except ProgramError as exc:
        return {"present": True, "usable": False, "error": exc.message}
    err = (done.stderr.strip().splitlines() or [f"exit {done.rc}"])[-1]
    return {"present": True, "usable": done.ok, "error": None if done.ok else err}


def _ipip(tunnel_present: bool) -> bool:
    if tunnel_present or SYS_IPIP.exists():
        return True
    try:
        return run.run(["modprobe", "ipip"], timeout=10).ok
    except ProgramError:
        return False


def probe_peers(addresses: dict[str, str], mtu: int) -> dict[str, dict[str, Any]]:
    """Per peer name: a small ping over the mesh, then one at the full MTU (don't fragment).
    Run before the handshakes are read: the ping itself makes WireGuard handshake if it can."""

    def probe(address: str) -> dict[str, Any]:
        ok = ping(address)
        return {
            "address": address,
            "ping": ok,
            "mtu_ok": ping(address, ping_size(mtu)) if ok else None,
        }

    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        results = list(pool.map(probe, addresses.values()))
    return dict(zip(addresses, results, strict=True))


def facts(state: StateDir) -> dict[str, Any]:
    """Everything `vpcctl doctor` judges, as JSON-ready data."""
    from vpcctl.host import docker
    from vpcctl.host.agent import check, status
    from vpcctl.host.kernel import LinuxSystem

    spec = state.applied_spec()
    mtu = spec.mtu if spec else 1420
    probes = probe_peers({p.name: str(p.address) for p in spec.peers} if spec else {}, mtu)
    system = LinuxSystem()
    try:
        st = status(system, state)
    finally:
        system.close()
    pre = check()
    iface = st.get("interface") or {}
    mtu = int(iface.get("mtu") or mtu)
    peers = [{**p, **probes.get(p.get("name") or "", {"ping": False})} for p in st["peers"]]
    tunnel = st.get("tunnel") or {}
    daemon_running = bool((st.get("daemon") or {}).get("running"))
    return {
        "host": st.get("host"),
        "version": __version__,
        "time": time.time(),
        "applied": st["applied"],
        "routing": spec.routing if spec else None,
        "wireguard": {
            "kernel": pre["wireguard"] == "kernel",
            "userspace": run.which("wireguard-go"),
            "in_use": iface.get("backend"),
        },
        "ipip": _ipip(bool(tunnel.get("present"))) if spec and spec.routing == "ipip" else None,
        "nft": _nft(),
        "forwarding": st["forwarding"],
        "resolver": st["resolver"]["running"],
        "daemon": {"enabled": bool(spec and spec.daemon.enabled), "running": daemon_running},
        "mtu": mtu,
        "peers": peers,
        "docker": docker.status(spec),
        "docker_wanted": [w.name for w in docker.wanted_networks(spec)] if spec else [],
    }
