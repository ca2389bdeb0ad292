"""A cheap fingerprint of everything vpcctl owns on this host, for the no-change fast path.

`vpcctl sync` from cron re-applies every host's spec every few minutes; nearly always nothing
changed. After each successful apply the agent records this fingerprint; when the next apply gets
the same spec and the fingerprint of the host is still the same, the host is up to date without
loading pyroute2 or planning. Anything that differs — a deleted route, a changed MTU, a flushed
table, a restarted wireguard-go, another key — changes the fingerprint and takes the full
observe -> plan -> apply path, which repairs it.

It reads the kernel with iproute2's JSON output (``ip -j``), WireGuard over wireguard-go's UAPI
socket or ``wg show dump``, and ``nft list table``. Volatile values (counters, handshake times,
operstate, endpoints learnt from roaming peers) are left out.
"""

from __future__ import annotations

import hashlib
import json
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

from vpcctl.core import run
from vpcctl.core.spec import HostSpec
from vpcctl.host.firewall import TABLE_FAMILY, TABLE_NAME
from vpcctl.host.linktypes import ALIAS_PREFIX, FORWARDING, RTPROT_VPCCTL


def _ip_batch(*commands: str) -> list[Any] | None:
    """Several `ip -j -d -4` commands in one process (`ip -batch`): one JSON document each."""
    text = run.output(["ip", "-j", "-d", "-4", "-batch", "-"], input="\n".join(commands) + "\n")
    if text is None:
        return None
    decoder, pos = json.JSONDecoder(), 0
    docs: list[Any] = []
    try:
        while len(docs) < len(commands):
            while pos < len(text) and text[pos].isspace():
                pos += 1
            doc, pos = decoder.raw_decode(text, pos)
            docs.append(doc)
    except ValueError:
        return None
    return docs


def _wg(spec: HostSpec, kind: str | None) -> Any:
    want_endpoint = {p.public_key for p in spec.peers if p.endpoint}
    if kind == "tun":
        from vpcctl.core.errors import KernelError
        from vpcctl.host.wguapi import UserspaceWireGuard

        try:
            dev = UserspaceWireGuard().get(spec.interface)
        except KernelError:
            return "unreachable"
        peers = {
            k: [
                sorted(map(str, p.allowed_ips)),
                p.keepalive,
                p.endpoint if k in want_endpoint else None,
                p.psk_digest,
            ]
            for k, p in dev.peers.items()
        }
        return [dev.public_key, dev.listen_port, sorted(peers.items())]
    if kind == "wireguard":
        out = run.output(["wg", "show", spec.interface, "dump"])
        if out is None:
            return None
        lines = [ln.split("\t") for ln in out.splitlines()]
        if not lines:
            return None
        head = lines[0]  # private-key public-key listen-port fwmark: drop the private key
        peers = {}
        for f in lines[1:]:
            if len(f) < 8:
                continue
            ips = sorted(x for x in f[3].split(",") if x and x != "(none)")
            keep = 0 if f[7] == "off" else int(f[7])
            psk = hashlib.sha256(f[1].encode()).hexdigest() if f[1] != "(none)" else None
            peers[f[0]] = [ips, keep, f[2] if f[0] in want_endpoint and f[2] != "(none)" else None,
                           psk]  # fmt: skip
        return [head[1], int(head[2]), sorted(peers.items())]
    return None


def _routes(spec: HostSpec, routes: list[dict[str, Any]]) -> list[list[Any]]:
    """vpcctl's routes and any route into a VPC range, as comparable lists."""
    nets: list[IPv4Network] = [v.cidr for v in spec.vpcs]
    rts = []
    for r in routes:
        dst = r.get("dst", "default")
        try:
            net = ip_network(
                "0.0.0.0/0" if dst == "default" else dst if "/" in dst else f"{dst}/32"
            )
        except ValueError:
            continue
        ours = str(r.get("protocol")) == str(RTPROT_VPCCTL)
        if ours or any(isinstance(net, IPv4Network) and net.overlaps(n) for n in nets):
            rts.append(
                [dst, r.get("gateway"), r.get("dev"), r.get("protocol"), sorted(r.get("flags", []))]
            )
    return rts


def fingerprint(
    spec: HostSpec, state_files: list[Path], pidfiles: list[Path] | None = None
) -> str | None:
    """A digest of this host's vpcctl-relevant state; None when it cannot be read cheaply
    (then the caller takes the full path)."""
    docs = _ip_batch("link show", "addr show", "route show table main")
    if docs is None:
        return None
    links, addrs, routes = docs
    wanted = {spec.interface, *(v.bridge for v in spec.vpcs)}
    if spec.tunnel:
        wanted.add(spec.tunnel.name)
    mine: dict[str, Any] = {}
    wg_kind = None
    for link in links:
        name = link.get("ifname")
        alias = link.get("ifalias") or ""
        if name not in wanted and not alias.startswith(ALIAS_PREFIX):
            continue
        info = link.get("linkinfo") or {}
        kind = info.get("info_kind")
        data = info.get("info_data") or {}
        if name == spec.interface:
            wg_kind = kind
        mine[name] = [kind, link.get("mtu"), "UP" in link.get("flags", []), alias,
                      data.get("local"), data.get("remote"), link.get("master")]  # fmt: skip
    for a in addrs:
        if a.get("ifname") in mine:
            mine[a["ifname"]].append(
                sorted(f"{x['local']}/{x['prefixlen']}" for x in a.get("addr_info", []))
            )
    rts = _routes(spec, routes)
    table = run.output(["nft", "list", "table", TABLE_FAMILY, TABLE_NAME])
    wg = _wg(spec, wg_kind)
    if wg is None and wg_kind is not None:
        return None
    try:
        forwarding = FORWARDING.read_text().strip()
    except OSError:
        return None
    files: list[str | None] = []
    for f in state_files:
        try:
            files.append(hashlib.sha256(f.read_bytes()).hexdigest())
        except OSError:
            files.append(None)
    from vpcctl.host import processes
    from vpcctl.host.dockersocket import socket_stamp

    procs = [processes.running(p) for p in pidfiles or []]
    # a dockerd started or restarted since (a new socket) takes the full path: its networks
    # and vpcctl's DOCKER-USER accepts; both are part of what the last apply left
    docker: list[object] | None = socket_stamp() if spec.vpcs else None
    if docker is not None:
        from vpcctl.host.iptables import listed

        docker.append([r for r in listed() or [] if any(w.startswith("vpcctl:") for w in r)])
    blob = json.dumps(
        [sorted(mine.items()), sorted(rts, key=str), wg, table, forwarding, files, procs, docker],
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()
