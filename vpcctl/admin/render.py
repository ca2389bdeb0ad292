"""Inventory + host -> HostSpec (the complete desired state of that host), and wg-quick export.

Pure. Peers, routes and the zone of a mesh are built once and shared by every host's spec, so
rendering all 1,000 hosts of a full mesh (999,000 peer entries) stays well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from vpcctl.core.errors import NotFoundError
from vpcctl.core.model import (
    DEFAULT_STATE_DIR,
    KEEPALIVE_SECONDS,
    Client,
    Inventory,
    gateway,
    relays_of,
    vpc_mtu,
)
from vpcctl.core.names import bridge_name, tunnel_name
from vpcctl.core.spec import (
    ClientSpec,
    DaemonSpec,
    HostSpec,
    PeerSpec,
    RouteSpec,
    ServiceSpec,
    TunnelSpec,
    VpcSpec,
    ZoneData,
    ZoneVpc,
    wireguard_peers,
)

PRIVATE_KEY_FILE = "private.key"
DEFAULT_TTL = 5


def zone_data(inv: Inventory, ttl: int = DEFAULT_TTL) -> ZoneData:
    vpcs = []
    for name in sorted(inv.vpcs):
        containers = sorted(
            ((c.name, c.ip) for c in inv.containers.values() if c.vpc == name),
        )
        services = sorted(
            ((s.name, s.vip, s.ports) for s in inv.services.values() if s.vpc == name),
            key=lambda t: t[0],
        )
        vpcs.append(
            ZoneVpc(
                name=name,
                cidr=inv.vpcs[name].cidr,
                containers=tuple(containers),
                services=tuple(services),
            )
        )
    return ZoneData(
        domain=inv.mesh.domain,
        ttl=ttl,
        mesh_cidr=inv.mesh.cidr,
        hosts=tuple((n, inv.hosts[n].address) for n in sorted(inv.hosts)),
        vpcs=tuple(vpcs),
        clients=tuple(sorted((c.address, c.vpcs) for c in inv.clients.values())),
    )


@dataclass(frozen=True, slots=True)
class _Shared:
    """Per-mesh values that every host's spec points into."""

    plain: tuple[PeerSpec, ...]  # every peer, as seen by a host with a public endpoint
    keepalive: tuple[PeerSpec, ...]  # ... as seen by a host behind NAT
    routes: tuple[RouteSpec, ...]  # routes to every peer's slices, peer after peer
    spans: dict[str, tuple[int, int, int]]  # peer -> its index in plain/keepalive, its routes
    order: tuple[str, ...]
    vpcs: dict[str, tuple[VpcSpec, ...]]
    services: tuple[ServiceSpec, ...]
    zone: ZoneData
    daemon: DaemonSpec
    clients: dict[str, tuple[ClientSpec, ...]]  # gateway host -> the clients it serves
    relays: dict[str, str]  # host behind NAT -> its relay


def client_dns(inv: Inventory, c: Client) -> IPv4Address:
    """Where a client asks for names: its gateway's resolver, on the gateway address of the
    gateway host's slice of the client's first VPC (an address the client routes anyway)."""
    return gateway(inv.hosts[c.via].slices[c.vpcs[0]]).ip


def _served(inv: Inventory) -> dict[str, tuple[ClientSpec, ...]]:
    out: dict[str, list[ClientSpec]] = {}
    for c in sorted(inv.clients.values(), key=lambda c: c.address):
        out.setdefault(c.via, []).append(
            ClientSpec(
                name=c.name, public_key=c.public_key, address=c.address,
                vpcs=tuple((v, inv.vpcs[v].cidr) for v in c.vpcs), dns=client_dns(inv, c),
            )
        )  # fmt: skip
    return {k: tuple(v) for k, v in out.items()}


def _shared(inv: Inventory) -> _Shared:
    mesh = inv.mesh
    tunnel = tunnel_name(mesh.interface)
    plain: dict[str, PeerSpec] = {}
    keepalive: dict[str, PeerSpec] = {}
    routes: dict[str, tuple[RouteSpec, ...]] = {}
    vpcs: dict[str, tuple[VpcSpec, ...]] = {}
    vpc_names = sorted(inv.vpcs)
    order = tuple(sorted(inv.hosts))
    served = _served(inv)
    for name in order:
        h = inv.hosts[name]
        # the clients a host is gateway of are reached through it, like its own slices
        clients = tuple(IPv4Network(f"{c.address}/32") for c in served.get(name, ()))
        slices = tuple(h.slices[v] for v in vpc_names if v in h.slices)
        by_vpc = tuple((v, h.slices[v]) for v in vpc_names if v in h.slices)
        if mesh.routing == "ipip":
            allowed: tuple[IPv4Network, ...] = (IPv4Interface(f"{h.address}/32").network,)
            routes[name] = tuple(
                RouteSpec(dst=s, dev=tunnel, via=h.address, onlink=True) for s in slices + clients
            )
        else:
            allowed = (IPv4Interface(f"{h.address}/32").network, *slices, *clients)
            routes[name] = tuple(RouteSpec(dst=s, dev=mesh.interface) for s in slices)
        if h.public_key is not None:
            plain[name] = PeerSpec(
                name=name,
                public_key=h.public_key,
                address=h.address,
                endpoint=h.endpoint,
                allowed_ips=allowed,
                keepalive=0,
                slices=by_vpc,
            )
            keepalive[name] = (
                PeerSpec(
                    name=name,
                    public_key=h.public_key,
                    address=h.address,
                    endpoint=h.endpoint,
                    allowed_ips=allowed,
                    keepalive=KEEPALIVE_SECONDS,
                    slices=by_vpc,
                )
                if h.endpoint is not None
                else plain[name]
            )
        vpcs[name] = tuple(
            VpcSpec(
                name=v,
                cidr=inv.vpcs[v].cidr,
                slice=h.slices[v],
                gateway=gateway(h.slices[v]),
                bridge=bridge_name(v),
                mtu=vpc_mtu(mesh.mtu, mesh.routing),
            )
            for v in vpc_names
            if v in h.slices
        )
    services = tuple(
        ServiceSpec(
            vpc=s.vpc,
            name=s.name,
            vip=s.vip,
            ports=s.ports,
            backends=tuple(
                inv.containers[f"{s.vpc}/{b}"].ip
                for b in s.backends
                if f"{s.vpc}/{b}" in inv.containers
            ),
            selector=s.selector,
        )
        for s in sorted(inv.services.values(), key=lambda s: (s.vpc, s.name))
    )
    # A host's peers and routes are these tuples without its own entries: two slices each, so that
    # the specs of a 1,000-host mesh share every entry and cost no Python loop per peer.
    keyed = [n for n in order if n in plain]
    all_routes: list[RouteSpec] = []
    spans: dict[str, tuple[int, int, int]] = {}
    for i, name in enumerate(keyed):
        start = len(all_routes)
        all_routes.extend(routes[name])
        spans[name] = (i, start, len(all_routes))
    return _Shared(
        plain=tuple(plain[n] for n in keyed),
        keepalive=tuple(keepalive[n] for n in keyed),
        routes=tuple(all_routes),
        spans=spans,
        order=order,
        vpcs=vpcs,
        services=services,
        zone=zone_data(inv),
        daemon=DaemonSpec(
            enabled=mesh.daemon, port=mesh.daemon_port, grace=mesh.grace, metrics=mesh.metrics
        ),
        clients=served,
        relays=relays_of(inv),
    )


def _spec(inv: Inventory, shared: _Shared, host: str) -> HostSpec:
    mesh = inv.mesh
    h = inv.hosts[host]
    table = shared.keepalive if h.endpoint is None else shared.plain
    span = shared.spans.get(host)
    if span is None:  # a host without a public key is nobody's peer yet
        peers, routes = table, shared.routes
    else:
        i, start, end = span
        peers = table[:i] + table[i + 1 :]
        routes = shared.routes[:start] + shared.routes[end:]
    relay = shared.relays.get(host)
    if relay is not None:  # the other hosts behind NAT cannot be dialled: through the relay
        peers = tuple(
            replace(p, relay=relay) if p.endpoint is None and p.name in shared.relays else p
            for p in peers
        )
    return HostSpec(
        mesh=mesh.name,
        host=host,
        interface=mesh.interface,
        address=IPv4Interface(f"{h.address}/{mesh.cidr.prefixlen}"),
        port=mesh.port,
        mtu=mesh.mtu,
        public_key=h.public_key,
        private_key_file=PRIVATE_KEY_FILE,
        routing=mesh.routing,
        tunnel=(
            TunnelSpec(
                name=tunnel_name(mesh.interface), local=h.address, mtu=vpc_mtu(mesh.mtu, "ipip")
            )
            if mesh.routing == "ipip"
            else None
        ),
        peers=peers,
        routes=routes,
        vpcs=shared.vpcs[host],
        services=shared.services,
        dns=shared.zone,
        daemon=shared.daemon,
        clients=shared.clients.get(host, ()),
        psk=mesh.psk,
    )


def render(inv: Inventory, host: str) -> HostSpec:
    if host not in inv.hosts:
        raise NotFoundError(f"no host named {host!r}", "see `vpcctl host ls`")
    return _spec(inv, _shared(inv), host)


def render_all(inv: Inventory) -> dict[str, HostSpec]:
    shared = _shared(inv)
    return {name: _spec(inv, shared, name) for name in shared.order}


def wg_quick(spec: HostSpec, private_key: str | None = None) -> str:
    """A wg-quick config a person can use by hand (``wg-quick strip`` accepts it).

    The private key is never in the inventory: without ``private_key`` the config reads it from
    the host's key file with a PostUp line, which wg-quick runs as root.
    """
    lines = [
        f"# vpcctl mesh {spec.mesh}, host {spec.host} (generated; edit the inventory instead)",
        "[Interface]",
        f"Address = {spec.address}",
        f"ListenPort = {spec.port}",
        f"MTU = {spec.mtu}",
    ]
    if private_key is not None:
        lines.append(f"PrivateKey = {private_key}")
    else:
        lines.append(f"PostUp = wg set %i private-key {DEFAULT_STATE_DIR / spec.private_key_file}")
    if spec.routing == "ipip":
        lines.append("Table = off")
    for p in wireguard_peers(spec):
        lines += ["", f"# {p.name}", "[Peer]", f"PublicKey = {p.public_key}"]
        if p.endpoint:
            lines.append(f"Endpoint = {p.endpoint}")
        lines.append("AllowedIPs = " + ", ".join(str(n) for n in p.allowed_ips))
        if p.keepalive:
            lines.append(f"PersistentKeepalive = {p.keepalive}")
    return "\n".join(lines) + "\n"


def client_config(inv: Inventory, name: str, private_key: str) -> str:
    """The wg-quick config of roaming client ``name``: the one text that holds its private key
    (printed once by ``vpcctl client add``, never stored). Its DNS line names the gateway's
    resolver and the VPC domains as search domains; AllowedIPs are its VPCs only."""
    c = inv.clients[name]
    gw = inv.hosts[c.via]
    domains = [f"{v}.{inv.mesh.domain}" for v in c.vpcs]
    return (
        "\n".join(
            [
                f"# vpcctl mesh {inv.mesh.name}, client {c.name} via {c.via}: shown once, it holds",
                "# the private key; import it into the WireGuard app (or wg-quick) and delete it",
                "[Interface]",
                f"PrivateKey = {private_key}",
                f"Address = {c.address}/32",
                f"DNS = {', '.join([str(client_dns(inv, c)), *domains])}",
                f"MTU = {vpc_mtu(inv.mesh.mtu, inv.mesh.routing)}",
                "",
                f"# {c.via}",
                "[Peer]",
                f"PublicKey = {gw.public_key}",
                f"Endpoint = {gw.endpoint}",
                "AllowedIPs = " + ", ".join(str(inv.vpcs[v].cidr) for v in c.vpcs),
                f"PersistentKeepalive = {KEEPALIVE_SECONDS}",
            ]
        )
        + "\n"
    )
