"""Runs inside a lab host (network + private mount namespace; see test_kernel_edge.py).

Usage: ``python -m tests.lab.kernel_edge_driver FUNC`` with a JSON object on
stdin; prints one JSON line with the result.  Keys travel on stdin, never argv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from base64 import b64decode
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from vpcctl.core.errors import KernelError
from vpcctl.host.netlink import HINT_IPIP, Netlink, Route
from vpcctl.host.wgtypes import PeerConfig, WgDevice
from vpcctl.host.wguapi import UserspaceWireGuard
from vpcctl.host.wireguard import detect_backend

PROTO = 211


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def dev_json(dev: WgDevice) -> dict[str, Any]:
    return {
        "name": dev.name,
        "public_key": dev.public_key,
        "listen_port": dev.listen_port,
        "backend": dev.backend,
        "peers": {
            k: {
                "endpoint": p.endpoint,
                "allowed_ips": [str(n) for n in p.allowed_ips],
                "keepalive": p.keepalive,
                "last_handshake": p.last_handshake,
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
            }
            for k, p in dev.peers.items()
        },
    }


def peer_cfg(p: dict[str, Any]) -> PeerConfig:
    return PeerConfig(
        public_key=p["public_key"],
        endpoint=p.get("endpoint"),
        allowed_ips=tuple(IPv4Network(n) for n in p["allowed_ips"]),
        keepalive=int(p.get("keepalive", 0)),
    )


def backend(a: dict[str, Any]) -> UserspaceWireGuard:
    return UserspaceWireGuard(log_dir=Path(a["log_dir"]))


# ------------------------------------------------------------------- scenarios


def netlink_scenario(a: dict[str, Any]) -> dict[str, Any]:
    br, va, vb = "vpcbr0", "vpcva0", "vpcvb0"
    gw_far = IPv4Address("10.96.0.9")  # not on any local subnet: needs onlink
    ours = Route(IPv4Network("10.97.0.0/24"), br, gw_far, onlink=True, proto=PROTO)
    out: dict[str, Any] = {}
    with Netlink() as nl:
        nl.add_bridge(br, mtu=1400, alias="vpcctl:lab")
        sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        sh("ip", "link", "set", va, "master", br)  # a 1500 port must not bump the MTU
        nl.set_link(br, up=True)
        nl.set_link(va, up=True)
        nl.add_address(br, IPv4Interface("10.99.0.1/24"))
        nl.add_address(br, IPv4Interface("10.99.0.1/24"))  # idempotent
        nl.add_address(br, IPv4Interface("10.99.1.1/24"))
        sh("ip", "route", "add", "10.98.0.0/24", "via", "10.99.0.5", "dev", br)  # foreign
        nl.add_route(ours)
        nl.add_route(ours)  # replace semantics: re-adding is safe
        link = nl.links()[br]
        out["link"] = {
            "kind": link.kind,
            "mtu": link.mtu,
            "up": link.up,
            "alias": link.alias,
            "addresses": [str(x) for x in link.addresses],
            "port_master": nl.links()[va].master,
            "port_kind": nl.links()[va].kind,
        }
        out["ours"] = [str(r) for r in nl.routes(proto=PROTO)]
        out["ours_eq"] = nl.routes(proto=PROTO) == [ours]
        out["all_before"] = sorted(f"{r.dst} {r.via} {r.proto}" for r in nl.routes())
        nl.del_route(ours)
        nl.del_route(ours)  # already gone: fine
        out["ours_after_del"] = [str(r) for r in nl.routes(proto=PROTO)]
        out["all_after"] = sorted(f"{r.dst} {r.via} {r.proto}" for r in nl.routes())
        # a route without gateway (scope link) also round-trips
        direct = Route(IPv4Network("10.95.0.0/24"), br, proto=PROTO)
        nl.add_route(direct)
        out["direct"] = nl.routes(proto=PROTO) == [direct]
        nl.del_route(direct)
        nl.set_link(br, alias="vpcctl:changed", mtu=1380)
        link = nl.links()[br]
        out["changed"] = [link.alias, link.mtu]
        nl.del_address(br, IPv4Interface("10.99.1.1/24"))
        nl.del_address(br, IPv4Interface("10.99.1.1/24"))  # idempotent
        out["addresses_after"] = [str(x) for x in nl.links()[br].addresses]
        try:
            nl.add_bridge(br, mtu=1400, alias="x")
            out["dup"] = None
        except KernelError as exc:
            out["dup"] = [exc.message, exc.hint]
        ipip_present = Path("/sys/module/ipip").exists()
        out["ipip_present"] = ipip_present
        try:
            nl.add_ipip("vpcip0", local=IPv4Address("192.0.2.1"), mtu=1480, alias="vpcctl:ip")
            lk = nl.links()["vpcip0"]
            out["ipip"] = ["created", str(lk.ipip_local), lk.ipip_remote, lk.kind]
            nl.delete_link("vpcip0")
        except KernelError as exc:
            out["ipip"] = ["error", exc.message, exc.hint, exc.hint == HINT_IPIP]
        try:
            nl.add_wireguard("vpcwgk0", mtu=1420, alias="vpcctl:wg")
            out["wg_kernel"] = ["created"]
            nl.delete_link("vpcwgk0")
        except KernelError as exc:
            out["wg_kernel"] = ["error", exc.message, exc.hint]
        nl.delete_link(br)
        nl.delete_link(br)  # idempotent
        out["br_gone"] = br not in nl.links()
        try:
            nl.set_link("vpcnope0", up=True)
            out["missing"] = None
        except KernelError as exc:
            out["missing"] = [exc.message, exc.hint]
    return out


def wg_up(a: dict[str, Any]) -> dict[str, Any]:
    """Create a userspace device, keys, port, address, up, peers."""
    wg = backend(a)
    ifname = a["ifname"]
    wg.create(ifname, mtu=1420, alias="vpcctl:wg")
    wg.set_device(ifname, private_key=b64decode(a["private_key"]), listen_port=a["port"])
    with Netlink() as nl:
        if a.get("address"):
            nl.add_address(ifname, IPv4Interface(a["address"]))
        nl.set_link(ifname, up=True)
        link = nl.links()[ifname]
    for p in a.get("peers", []):
        wg.set_peer(ifname, peer_cfg(p))
    return {
        "exists": wg.exists(ifname),
        "kind": link.kind,
        "alias": link.alias,
        "mtu": link.mtu,
        "dev": dev_json(wg.get(ifname)),
    }


def wg_get(a: dict[str, Any]) -> dict[str, Any]:
    return dev_json(backend(a).get(a["ifname"]))


def wg_set_peer(a: dict[str, Any]) -> dict[str, Any]:
    wg = backend(a)
    wg.set_peer(a["ifname"], peer_cfg(a["peer"]))
    return dev_json(wg.get(a["ifname"]))


def wg_remove_peer(a: dict[str, Any]) -> dict[str, Any]:
    wg = backend(a)
    wg.remove_peer(a["ifname"], a["public_key"])
    return dev_json(wg.get(a["ifname"]))


def wg_many(a: dict[str, Any]) -> dict[str, Any]:
    wg = backend(a)
    ifname = a["ifname"]
    wg.create(ifname)
    wg.set_device(ifname, private_key=b64decode(a["private_key"]), listen_port=a["port"])
    for p in a["peers"]:
        wg.set_peer(ifname, peer_cfg(p))
    return dev_json(wg.get(ifname))


def wg_delete(a: dict[str, Any]) -> dict[str, Any]:
    wg = backend(a)
    ifname = a["ifname"]
    wg.delete(ifname)
    wg.delete(ifname)  # idempotent
    with Netlink() as nl:
        link_gone = ifname not in nl.links()
    return {
        "exists": wg.exists(ifname),
        "link_gone": link_gone,
        "socket_gone": not wg.socket_path(ifname).exists(),
    }


def wg_errors(a: dict[str, Any]) -> dict[str, Any]:
    wg = backend(a)
    out: dict[str, Any] = {}
    try:
        wg.get("vpcnone0")
    except KernelError as exc:
        out["get_missing"] = [exc.message, exc.hint]
    sh("ip", "link", "add", "vpctaken0", "type", "bridge")
    try:
        wg.create("vpctaken0")
    except KernelError as exc:
        out["taken"] = [exc.message, exc.hint]
    try:
        wg.delete("vpctaken0")
    except KernelError as exc:
        out["delete_foreign"] = [exc.message, exc.hint]
    sh("ip", "link", "del", "vpctaken0")
    return out


def detect(a: dict[str, Any]) -> dict[str, Any]:
    b = detect_backend()
    with Netlink() as nl:
        leftovers = [n for n in nl.links() if n.startswith("vpcprobe")]
    forced = detect_backend("userspace").name
    try:
        detect_backend("kernel")
        kernel = "ok"
    except KernelError as exc:
        kernel = exc.hint or ""
    return {"name": b.name, "leftovers": leftovers, "forced": forced, "kernel": kernel}


FUNCS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        netlink_scenario,
        wg_up,
        wg_get,
        wg_set_peer,
        wg_remove_peer,
        wg_many,
        wg_delete,
        wg_errors,
        detect,
    )
}


def main() -> None:
    args = json.loads(sys.stdin.read() or "{}")
    result = FUNCS[sys.argv[1]](args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
