"""A peer's side of `vpcctl host rotate-key`: follow a host's new key the moment it is used.

``agent follow NEW --old OLD``: the new public key is added as a peer beside the old one (the old
one's endpoint and keepalive, the new pair's preshared key, no allowed IPs, so nothing is routed
to it yet) and a child process watches it; the first handshake from the new key (the host has
switched) moves the old peer's allowed IPs to it and removes the old peer, within a poll (10 ms).
Until then the old session carries everything both ways; after it the new one does.
"""

from __future__ import annotations

import os
import time
from typing import Any

from vpcctl.core.errors import ApplyError
from vpcctl.core.model import parse_public_key
from vpcctl.host.state import StateDir
from vpcctl.host.wgtypes import PeerUpdate

POLL = 0.01  # seconds between looks at the new peer's handshake
WATCH = 120.0  # seconds the watcher waits for the host to switch before it gives up


def _device(system: Any, iface: str) -> Any:
    link = system.links().get(iface)
    dev = system.wg_get(iface, link.kind) if link is not None else None
    if dev is None:
        raise ApplyError(f"no WireGuard interface {iface} here", "run `vpcctl up` first")
    return dev


def follow(state: StateDir, new: str, old: str, *, watch: bool = True) -> dict[str, Any]:
    from vpcctl.host.kernel import LinuxSystem
    from vpcctl.host.psk import for_peers

    new = parse_public_key(new, "NEW")
    old = parse_public_key(old, "--old")
    spec = state.applied_spec()
    if spec is None:
        raise ApplyError("this host has no applied spec", "run `vpcctl up` first")
    system = LinuxSystem()
    try:
        dev = _device(system, spec.interface)
        have = dev.peers.get(old)
        if have is None or new in dev.peers:
            return {"following": False}  # already swapped (or never had it): the apply does it
        own = dev.public_key or ""
        psk = for_peers(state, own, [new]).get(new) if spec.psk else None
        system.wg_update_peer(spec.interface, PeerUpdate(
            public_key=new, create=True, endpoint=have.endpoint, keepalive=have.keepalive,
            preshared_key=psk,
        ))  # fmt: skip
    finally:
        system.close()
    if watch and os.fork() == 0:  # the child watches; the parent answers the admin at once
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            _watch(spec.interface, new, old, tuple(have.allowed_ips))
        finally:
            os._exit(0)
    return {"following": True}


def _watch(iface: str, new: str, old: str, allowed: tuple[Any, ...]) -> None:
    from vpcctl.host.kernel import LinuxSystem

    system = LinuxSystem()
    deadline = time.monotonic() + WATCH
    try:
        while time.monotonic() < deadline:
            peers = _device(system, iface).peers
            if old not in peers or new not in peers:
                return  # the apply swapped them already
            if peers[new].last_handshake is not None:
                system.wg_update_peer(iface, PeerUpdate(
                    public_key=new, create=False, replace_allowed_ips=True, allowed_ips=allowed,
                ))  # fmt: skip
                system.wg_remove_peer(iface, old)
                return
            time.sleep(POLL)
    finally:
        system.close()
