"""plan(desired, observed) -> Plan: the typed changes that bring a host to its HostSpec. Pure.

The plan is a value: ``agent apply --dry-run`` prints it, ``agent apply`` executes it, an empty
plan means "up to date". Changes come in a safe order (forwarding, WireGuard device, peers,
tunnel, bridges, routes, firewall, zone): adding or removing one peer is a peer change only and
never recreates the interface, so the other peers' sessions go on untouched.

Ownership: vpcctl owns the links whose alias is ``vpcctl:<mesh>``, the routes carrying its route
protocol number and its nftables table. It changes and removes only those. A desired name that is
already taken by a link vpcctl does not own is a conflict, reported before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from vpcctl.core.errors import ApplyError
from vpcctl.core.keys import PresharedKey
from vpcctl.core.spec import HostSpec, wireguard_peers
from vpcctl.host.changes import (
    MANAGED,
    AddAddress,
    AddRoute,
    Change,
    CreateBridge,
    CreateTunnel,
    CreateWireGuard,
    DelAddress,
    DeleteFirewall,
    DeleteLink,
    DelRoute,
    LoadFirewall,
    Plan,
    RemovePeer,
    SetForwarding,
    SetLink,
    SetListenPort,
    SetPeer,
    SetPrivateKey,
    StartDaemon,
    StartResolver,
    StopDaemon,
    StopResolver,
    WriteZone,
)
from vpcctl.host.linktypes import ALIAS_PREFIX, RTPROT_VPCCTL, Link, Route
from vpcctl.host.wgtypes import PeerConfig, WgDevice, plan_peer_update


def alias_for(mesh: str) -> str:
    return f"{ALIAS_PREFIX}{mesh}"


def owned(link: Link) -> bool:
    return bool(link.alias and link.alias.startswith(ALIAS_PREFIX))


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class FirewallRecord:
    """What the agent recorded when it last loaded the table."""

    desired: str  # digest of the text vpcctl generated
    listing: str  # digest of `nft list table` right after loading it


@dataclass(frozen=True)
class Observed:
    backend: str  # "kernel" | "userspace": how a WireGuard interface would be created here
    links: Mapping[str, Link]
    routes: tuple[Route, ...]  # main-table IPv4 routes; vpcctl's carry RTPROT_VPCCTL
    wg: WgDevice | None  # the mesh interface's WireGuard state, if it exists
    forwarding: bool
    firewall_listing: str | None  # digest of our table's listing; None when absent
    firewall_record: FirewallRecord | None
    zone_text: str | None  # the zone file as it is on disk
    endpoints: Mapping[str, str] = field(default_factory=dict)  # spec endpoint -> IP:port
    resolver: tuple[str, ...] | None = None  # argv of the running resolver
    daemon: tuple[str, ...] | None = None  # argv of the running agent daemon
    forwarding_before: bool | None = None  # ip_forward before vpcctl first set it (None: unknown)


@dataclass(frozen=True)
class Desired:
    """A HostSpec plus what the host derives from its own secrets and the firewall builder.

    ``spec`` None means "nothing": remove everything vpcctl owns (used by rollback of a
    first apply, and by `agent down`)."""

    spec: HostSpec | None
    public_key: str | None = None  # derived from the host's private key file
    firewall: str = ""  # nft text for the table
    zone: str = ""  # zone file text
    zone_names: int = 0
    resolver: tuple[str, ...] | None = None  # argv the resolver should run with (None: none)
    daemon: tuple[str, ...] | None = None  # argv of the agent daemon (None: apply leaves it be)
    psks: Mapping[str, PresharedKey] = field(default_factory=dict)  # peer public key -> its key


# ---------------------------------------------------------------------------------------------
# planning


def _check_conflicts(spec: HostSpec, observed: Observed, wanted: dict[str, str | None]) -> None:
    mine = alias_for(spec.mesh)
    for name in wanted:
        link = observed.links.get(name)
        if link is None:
            continue
        if not owned(link):
            raise ApplyError(
                f"a link named {name} already exists and is not owned by vpcctl "
                f"(kind {link.kind or 'plain'})",
                f"rename or delete it (ip link del {name}), or pick another name in the inventory",
            )
        if link.alias != mine:
            raise ApplyError(
                f"link {name} belongs to another vpcctl mesh ({link.alias})",
                "one host can be in one mesh: remove the other mesh first (`vpcctl agent down`)",
            )


def _link_changes(
    name: str, link: Link, mtu: int, addresses: tuple[IPv4Interface, ...]
) -> list[Change]:
    out: list[Change] = []
    if link.mtu != mtu or not link.up:
        out.append(
            SetLink(name, mtu=mtu if link.mtu != mtu else None, up=True if not link.up else None)
        )
    have, want = set(link.addresses), set(addresses)
    out += [AddAddress(name, a) for a in sorted(want - have)]
    out += [DelAddress(name, a) for a in sorted(have - want)]
    return out


def _wanted_links(spec: HostSpec, wg_kind: str) -> dict[str, str | None]:
    """The links this spec wants, by name, with the kind each must have."""
    wanted: dict[str, str | None] = {spec.interface: wg_kind}
    if spec.tunnel is not None:
        wanted[spec.tunnel.name] = "ipip"
    for v in spec.vpcs:
        wanted[v.bridge] = "bridge"
    return wanted


Steps = tuple[list[Change], list[Change]]  # (deletes that must come first, the changes)


def _wireguard(desired: Desired, observed: Observed, spec: HostSpec, wg_kind: str) -> Steps:
    """The WireGuard device: created (or recreated when its kind is wrong), or adjusted."""
    iface = observed.links.get(spec.interface)
    first: list[Change] = []
    if iface is not None and iface.kind != wg_kind:
        first.append(DeleteLink(spec.interface, iface.kind))
        iface = None
    key = desired.public_key or "?"
    if iface is None:
        return first, [
            CreateWireGuard(spec.interface, observed.backend, spec.mtu, alias_for(spec.mesh)),
            SetPrivateKey(spec.interface, key),
            SetListenPort(spec.interface, spec.port),
            SetLink(spec.interface, mtu=None, up=True),
            AddAddress(spec.interface, spec.address),
        ]
    wg = observed.wg
    changes: list[Change] = []
    if wg is None or wg.public_key != desired.public_key:
        changes.append(SetPrivateKey(spec.interface, key))
    if wg is None or wg.listen_port != spec.port:
        changes.append(SetListenPort(spec.interface, spec.port))
    return first, changes + _link_changes(spec.interface, iface, spec.mtu, (spec.address,))


def _peers(
    spec: HostSpec, observed: Observed, wg: WgDevice | None, psks: Mapping[str, PresharedKey]
) -> list[Change]:
    """Peers changed in place: each one's minimal update, and removals."""
    current = dict(wg.peers) if wg is not None else {}
    changes: list[Change] = []
    peers = wireguard_peers(spec)
    for p in peers:
        endpoint = observed.endpoints.get(p.endpoint, p.endpoint) if p.endpoint else None
        cfg = PeerConfig(
            public_key=p.public_key,
            endpoint=endpoint,
            allowed_ips=p.allowed_ips,
            keepalive=p.keepalive,
            preshared_key=psks.get(p.public_key),
        )
        have = current.get(cfg.public_key)
        update = plan_peer_update(have, cfg)
        if update is not None:
            changes.append(
                SetPeer(
                    spec.interface, p.name, cfg.public_key, cfg.endpoint, cfg.allowed_ips,
                    cfg.keepalive, new=have is None, update=update,
                )
            )  # fmt: skip
    desired_keys = {p.public_key for p in peers}
    return changes + [RemovePeer(spec.interface, k) for k in sorted(set(current) - desired_keys)]


def _tunnel(spec: HostSpec, observed: Observed) -> Steps:
    if spec.tunnel is None:
        return [], []
    t = spec.tunnel
    tun = observed.links.get(t.name)
    first: list[Change] = []
    if tun is not None and (tun.kind != "ipip" or tun.ipip_local != t.local or tun.ipip_remote):
        first.append(DeleteLink(t.name, tun.kind))
        tun = None
    if tun is None:
        return first, [CreateTunnel(t.name, t.local, t.mtu, alias_for(spec.mesh)),
                       SetLink(t.name, up=True)]  # fmt: skip
    return first, _link_changes(t.name, tun, t.mtu, ())


def _bridges(spec: HostSpec, observed: Observed) -> Steps:
    first: list[Change] = []
    changes: list[Change] = []
    for v in spec.vpcs:
        br = observed.links.get(v.bridge)
        if br is not None and br.kind != "bridge":
            first.append(DeleteLink(v.bridge, br.kind))
            br = None
        if br is None:
            changes.append(CreateBridge(v.bridge, v.mtu, alias_for(spec.mesh)))
            changes.append(SetLink(v.bridge, up=True))
            changes.append(AddAddress(v.bridge, v.gateway))
        else:
            changes += _link_changes(v.bridge, br, v.mtu, (v.gateway,))
    return first, changes


def _routes_and_stale_links(
    spec: HostSpec, observed: Observed, wanted: dict[str, str | None]
) -> list[Change]:
    """Routes (add = replace, so a changed next hop needs no delete), then the owned links that
    are no longer wanted (a removed VPC's bridge, the tunnel after a switch to routing
    "wireguard"). A foreign route to a wanted destination is a conflict."""
    stale = [
        DeleteLink(name, link.kind)
        for name, link in sorted(observed.links.items())
        if owned(link) and name not in wanted
    ]
    want_routes = {
        Route(dst=r.dst, dev=r.dev, via=r.via, onlink=r.onlink, proto=RTPROT_VPCCTL)
        for r in spec.routes
    }
    want_dsts = {r.dst for r in want_routes}
    have_routes = {r for r in observed.routes if r.proto == RTPROT_VPCCTL}
    for r in observed.routes:
        if r.proto != RTPROT_VPCCTL and r.dst in want_dsts and r.dev not in wanted:
            raise ApplyError(
                f"a route to {r.dst} via {r.via or r.dev} exists that vpcctl does not own",
                f"it overlaps a VPC slice: remove it (ip route del {r.dst}) or renumber the VPC",
            )
    changes: list[Change] = [AddRoute(r) for r in sorted(want_routes - have_routes, key=_route_key)]
    gone_links = {c.name for c in stale}
    changes += [
        DelRoute(r)
        for r in sorted(have_routes - want_routes, key=_route_key)
        if r.dst not in want_dsts and r.dev not in gone_links
    ]
    return changes + stale


def _firewall_and_names(desired: Desired, observed: Observed) -> list[Change]:
    """The nftables table (reloaded unless both its text and its listing are as recorded), the
    zone file, and the resolver (restarted only when its command line changes; zones reload by
    themselves)."""
    from vpcctl.host.firewall import digest

    changes: list[Change] = []
    want_fw = digest(desired.firewall)
    rec = observed.firewall_record
    fw_ok = (
        observed.firewall_listing is not None
        and rec is not None
        and rec.desired == want_fw
        and rec.listing == observed.firewall_listing
    )
    if not fw_ok:
        changes.append(LoadFirewall(want_fw, desired.firewall))
    if desired.zone and observed.zone_text != desired.zone:
        changes.append(WriteZone(desired.zone_names, desired.zone))
    if desired.resolver is not None and observed.resolver != desired.resolver:
        changes.append(StartResolver(desired.resolver))
    elif desired.resolver is None and observed.resolver is not None:
        changes.append(StopResolver())

    # -- the agent daemon: kept running when the spec asks for it; one that apply did not start
    # (systemd's, or by hand) is left alone unless the spec asks for it
    if desired.daemon is not None and observed.daemon != desired.daemon:
        changes.append(StartDaemon(desired.daemon))
    elif desired.daemon is None and observed.daemon is not None and MANAGED in observed.daemon:
        changes.append(StopDaemon())
    return changes


def plan(desired: Desired, observed: Observed) -> Plan:
    """The changes, in a safe order, that bring the observed host to the desired state."""
    spec = desired.spec
    if spec is None:
        return _plan_down(observed)
    wg_kind = "wireguard" if observed.backend == "kernel" else "tun"
    wanted = _wanted_links(spec, wg_kind)
    _check_conflicts(spec, observed, wanted)
    wg_first, wg_changes = _wireguard(desired, observed, spec, wg_kind)
    # a WireGuard device that is recreated has no peers yet
    wg = None if wg_first or spec.interface not in observed.links else observed.wg
    tun_first, tun_changes = _tunnel(spec, observed)
    br_first, br_changes = _bridges(spec, observed)
    changes: list[Change] = [SetForwarding(True)] if not observed.forwarding else []
    peers = _peers(spec, observed, wg, desired.psks)
    if wg is not None:  # a new key on a live device: the peers (their new preshared keys) first,
        # so the first handshake with the new key already uses them (`host rotate-key`)
        rekey: list[Change] = [c for c in wg_changes if isinstance(c, SetPrivateKey)]
        wg_changes = [c for c in wg_changes if not isinstance(c, SetPrivateKey)] + peers + rekey
        peers = []
    changes += wg_changes + peers + tun_changes + br_changes
    changes += _routes_and_stale_links(spec, observed, wanted)
    changes += _firewall_and_names(desired, observed)
    return Plan(tuple(wg_first + tun_first + br_first + changes))


def _route_key(r: Route) -> tuple[int, int, str]:
    return (int(r.dst.network_address), r.dst.prefixlen, r.dev)


def _plan_down(observed: Observed) -> Plan:
    changes: list[Change] = [
        DeleteLink(name, link.kind) for name, link in sorted(observed.links.items()) if owned(link)
    ]
    gone = {c.name for c in changes if isinstance(c, DeleteLink)}
    changes = [
        DelRoute(r) for r in observed.routes if r.proto == RTPROT_VPCCTL and r.dev not in gone
    ] + changes
    if observed.firewall_listing is not None:
        changes.append(DeleteFirewall())
    if observed.resolver is not None:
        changes.append(StopResolver())
    before = observed.forwarding_before
    if before is not None and before != observed.forwarding:
        changes.append(SetForwarding(before, restore=True))
    if observed.daemon is not None:
        changes.insert(0, StopDaemon())  # first: it would rewrite what the others remove
    return Plan(tuple(changes))
