"""HostSpec: the complete desired state of one host, as a typed value and as stable JSON.

``vpcctl render HOST --format json`` prints it; the host agent reads it back with
:func:`from_json`, which validates every field again (the agent runs as root and trusts nothing it
did not check). Schema: README "HostSpec".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, TypeVar

from vpcctl.core.errors import SpecError, ValidationError
from vpcctl.core.model import (
    DAEMON_PORT,
    DEFAULT_GRACE,
    PortSpec,
    Routing,
    Selector,
    make_selector,
    parse_address,
    parse_domain,
    parse_endpoint,
    parse_ifname,
    parse_int,
    parse_label,
    parse_label_key,
    parse_label_value,
    parse_metrics,
    parse_network,
    parse_port,
    parse_portspec,
    parse_public_key,
)
from vpcctl.core.reader import Reader

SPEC_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PeerSpec:
    name: str
    public_key: str
    address: IPv4Address
    endpoint: str | None
    allowed_ips: tuple[IPv4Network, ...]
    keepalive: int
    # (vpc, slice) pairs, sorted: the only addresses this peer may announce (the mesh table)
    slices: tuple[tuple[str, IPv4Network], ...] = ()
    # both behind NAT: no WireGuard peer of its own, its allowed IPs go to this relay peer
    relay: str | None = None


@dataclass(frozen=True, slots=True)
class DaemonSpec:
    """The agent daemon (`vpcctl agent run`): whether `agent apply` keeps it running, the TCP port
    every host serves its endpoint set on (its mesh address only), and the grace in seconds after
    which an unreachable peer's records expire."""

    enabled: bool = False
    port: int = DAEMON_PORT
    grace: int = DEFAULT_GRACE
    metrics: str | None = None  # Prometheus metrics: "127.0.0.1:PORT" or "mesh:PORT"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    dst: IPv4Network
    dev: str
    via: IPv4Address | None = None
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    name: str
    local: IPv4Address
    mtu: int


@dataclass(frozen=True, slots=True)
class VpcSpec:
    name: str
    cidr: IPv4Network
    slice: IPv4Network
    gateway: IPv4Interface
    bridge: str
    mtu: int


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    vpc: str
    name: str
    vip: IPv4Address
    ports: tuple[PortSpec, ...]
    backends: tuple[IPv4Address, ...]  # the declared backends' addresses
    selector: Selector = ()  # running containers of the VPC with these labels are backends too


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """A roaming client this host is the gateway of: a WireGuard peer with its address as the
    only allowed IP, that may reach ``vpcs`` (and the resolver at ``dns``) and nothing else."""

    name: str
    public_key: str
    address: IPv4Address
    vpcs: tuple[tuple[str, IPv4Network], ...]  # (vpc, its CIDR), sorted
    dns: IPv4Address  # this host's resolver address the client's config names


def wireguard_peers(spec: HostSpec) -> tuple[PeerSpec, ...]:
    """Every WireGuard peer of the host: the mesh's hosts (a relayed one's allowed IPs on its
    relay's peer instead of a peer of its own), then the clients it is gateway of."""
    extra: dict[str, tuple[IPv4Network, ...]] = {}
    for p in spec.peers:
        if p.relay is not None:
            extra[p.relay] = extra.get(p.relay, ()) + p.allowed_ips
    direct = tuple(
        replace(p, allowed_ips=p.allowed_ips + extra[p.name]) if p.name in extra else p
        for p in spec.peers
        if p.relay is None
    )
    return direct + tuple(
        PeerSpec(
            name=c.name, public_key=c.public_key, address=c.address, endpoint=None,
            allowed_ips=(IPv4Network(f"{c.address}/32"),), keepalive=0,
        )
        for c in spec.clients
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ZoneVpc:
    name: str
    cidr: IPv4Network
    containers: tuple[tuple[str, IPv4Address], ...]
    services: tuple[tuple[str, IPv4Address, tuple[PortSpec, ...]], ...]


@dataclass(frozen=True, slots=True)
class ZoneData:
    """Everything the resolver needs: the same on every host of a mesh."""

    domain: str
    ttl: int
    mesh_cidr: IPv4Network
    hosts: tuple[tuple[str, IPv4Address], ...]
    vpcs: tuple[ZoneVpc, ...]
    # roaming clients: (address, the VPCs whose names it may resolve), sorted by address
    clients: tuple[tuple[IPv4Address, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class HostSpec:
    mesh: str
    host: str
    interface: str
    address: IPv4Interface
    port: int
    mtu: int
    public_key: str | None  # what the inventory expects this host's key to be
    private_key_file: str  # relative to the agent's state directory
    routing: Routing
    tunnel: TunnelSpec | None
    peers: tuple[PeerSpec, ...]
    routes: tuple[RouteSpec, ...]
    vpcs: tuple[VpcSpec, ...]
    services: tuple[ServiceSpec, ...]
    dns: ZoneData
    daemon: DaemonSpec = DaemonSpec()
    psk: bool = False  # a preshared key per pair, from the agent's own store (never in here)
    version: int = SPEC_VERSION
    clients: tuple[ClientSpec, ...] = ()


# ---------------------------------------------------------------------------------------------
# to JSON


def _ports(ports: tuple[PortSpec, ...]) -> list[str]:
    return [str(p) for p in ports]


def zone_to_dict(z: ZoneData) -> dict[str, Any]:
    clients = {"clients": {str(a): list(v) for a, v in z.clients}} if z.clients else {}
    return {
        **clients,
        "domain": z.domain,
        "ttl": z.ttl,
        "mesh_cidr": str(z.mesh_cidr),
        "hosts": {name: str(ip) for name, ip in z.hosts},
        "vpcs": [
            {
                "name": v.name,
                "cidr": str(v.cidr),
                "containers": {n: str(ip) for n, ip in v.containers},
                "services": {n: {"vip": str(vip), "ports": _ports(p)} for n, vip, p in v.services},
            }
            for v in z.vpcs
        ],
    }


def zone_file_text(zone: ZoneData) -> tuple[str, int]:
    """The resolver's zone file and its number of names."""
    data = zone_to_dict(zone)
    names = len(data["hosts"]) + sum(
        len(v["containers"]) + len(v["services"]) for v in data["vpcs"]
    )
    return json.dumps(data, indent=2, sort_keys=True) + "\n", names


class Encoder:
    """Turns HostSpecs into JSON-ready dicts. Peers, routes and the zone are shared between the
    specs of one mesh, so one Encoder caches their dicts: rendering every host of a large mesh
    converts each of them once."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[object, Any]] = {}

    def _memo(self, obj: object, make: Any) -> Any:
        hit = self._cache.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = make(obj)
        self._cache[id(obj)] = (obj, value)
        return value

    @staticmethod
    def _peer(p: PeerSpec) -> dict[str, Any]:
        return {
            "name": p.name,
            "public_key": p.public_key,
            "address": str(p.address),
            "endpoint": p.endpoint,
            "allowed_ips": [str(n) for n in p.allowed_ips],
            "keepalive": p.keepalive,
            "slices": {vpc: str(net) for vpc, net in p.slices},
            **({"relay": p.relay} if p.relay is not None else {}),
        }

    @staticmethod
    def _route(r: RouteSpec) -> dict[str, Any]:
        return {
            "dst": str(r.dst),
            "dev": r.dev,
            "via": str(r.via) if r.via else None,
            "onlink": r.onlink,
        }

    def to_dict(self, s: HostSpec) -> dict[str, Any]:
        return {
            "version": s.version,
            "mesh": s.mesh,
            "host": s.host,
            "interface": {
                "name": s.interface,
                "address": str(s.address),
                "port": s.port,
                "mtu": s.mtu,
                "public_key": s.public_key,
                "private_key_file": s.private_key_file,
            },
            "routing": s.routing,
            "tunnel": (
                {"name": s.tunnel.name, "local": str(s.tunnel.local), "mtu": s.tunnel.mtu}
                if s.tunnel
                else None
            ),
            "peers": [self._memo(p, self._peer) for p in s.peers],
            "routes": [self._memo(r, self._route) for r in s.routes],
            "vpcs": [
                {
                    "name": v.name,
                    "cidr": str(v.cidr),
                    "slice": str(v.slice),
                    "gateway": str(v.gateway),
                    "bridge": v.bridge,
                    "mtu": v.mtu,
                }
                for v in s.vpcs
            ],
            "services": [
                {
                    "vpc": v.vpc,
                    "name": v.name,
                    "vip": str(v.vip),
                    "ports": _ports(v.ports),
                    "backends": [str(b) for b in v.backends],
                    "selector": dict(v.selector),
                }
                for v in s.services
            ],
            "dns": self._memo(s.dns, zone_to_dict),
            "daemon": {
                "enabled": s.daemon.enabled,
                "port": s.daemon.port,
                "grace": s.daemon.grace,
                **({"metrics": s.daemon.metrics} if s.daemon.metrics else {}),
            },
            **({"psk": True} if s.psk else {}),
            **({"clients": [_client(c) for c in s.clients]} if s.clients else {}),
        }

    def dumps(self, s: HostSpec, *, compact: bool = False) -> str:
        """Indented for people (`render`, the agent's records); compact for the wire, which
        Python's C encoder writes about ten times faster."""
        if compact:
            return json.dumps(self.to_dict(s), separators=(",", ":")) + "\n"
        return json.dumps(self.to_dict(s), indent=2) + "\n"


def _client(c: ClientSpec) -> dict[str, Any]:
    return {
        "name": c.name, "public_key": c.public_key, "address": str(c.address),
        "vpcs": {v: str(n) for v, n in c.vpcs}, "dns": str(c.dns),
    }  # fmt: skip


def _clients(r: Reader, top: dict[str, Any]) -> tuple[ClientSpec, ...]:
    out = []
    for k, c in r.records({"clients": top.get("clients", [])}, "clients"):
        vpcs = r.mapping(r.get(c, "vpcs", k), f"{k}.vpcs")
        out.append(
            ClientSpec(
                name=r.field(c, "name", k, parse_label),
                public_key=r.field(c, "public_key", k, parse_public_key),
                address=r.field(c, "address", k, parse_address),
                vpcs=tuple(sorted(
                    (parse_label(v, r.where(f"{k}.vpcs"), "VPC name"),
                     parse_network(n, r.where(f"{k}.vpcs.{v}")))
                    for v, n in vpcs.items()
                )),
                dns=r.field(c, "dns", k, parse_address),
            )
        )  # fmt: skip
    return tuple(out)


def to_json(spec: HostSpec) -> str:
    """Stable JSON text: same spec, same bytes (so a host can tell "nothing changed" cheaply)."""
    return Encoder().dumps(spec)


# ---------------------------------------------------------------------------------------------
# from JSON (validating)


def read_json(
    text: str | bytes,
    source: str,
    hint: str,
    reader: Callable[[object, str], T],
    pick: Callable[[object], object] = lambda raw: raw,
) -> T:
    """A JSON document read by ``reader(pick(parsed), source)``; every problem a SpecError
    (not JSON: with ``hint``)."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{source}: not valid JSON ({exc})", hint) from None
    try:
        return reader(pick(raw), source)
    except ValidationError as exc:
        raise SpecError(exc.message, exc.hint) from None


def from_json(text: str | bytes, source: str = "spec") -> HostSpec:
    return read_json(
        text, source, "pass the output of `vpcctl render HOST --format json`", from_dict
    )


def _peer(r: Reader, k: str, p: dict[str, Any]) -> PeerSpec:
    endpoint = p.get("endpoint")
    return PeerSpec(
        name=r.field(p, "name", k, parse_label),
        public_key=r.field(p, "public_key", k, parse_public_key),
        address=r.field(p, "address", k, parse_address),
        endpoint=None if endpoint is None else parse_endpoint(endpoint, r.where(f"{k}.endpoint")),
        allowed_ips=tuple(
            parse_network(n, r.where(f"{k}.allowed_ips"))
            for n in r.lst(r.get(p, "allowed_ips", k), f"{k}.allowed_ips")
        ),
        keepalive=r.field(p, "keepalive", k, parse_int, 0, 65535),
        slices=tuple(
            sorted(
                (
                    parse_label(vpc, r.where(f"{k}.slices"), "VPC name"),
                    parse_network(net, r.where(f"{k}.slices.{vpc}")),
                )
                for vpc, net in r.mapping(p.get("slices", {}), f"{k}.slices").items()
            )
        ),
        relay=None if p.get("relay") is None else r.field(p, "relay", k, parse_label),
    )


def _route(r: Reader, k: str, rt: dict[str, Any]) -> RouteSpec:
    via = rt.get("via")
    return RouteSpec(
        dst=r.field(rt, "dst", k, parse_network),
        dev=r.field(rt, "dev", k, parse_ifname),
        via=None if via is None else parse_address(via, r.where(f"{k}.via")),
        onlink=r.boolean(rt.get("onlink", False), f"{k}.onlink"),
    )


def _vpc(r: Reader, k: str, v: dict[str, Any]) -> VpcSpec:
    return VpcSpec(
        name=r.field(v, "name", k, parse_label),
        cidr=r.field(v, "cidr", k, parse_network),
        slice=r.field(v, "slice", k, parse_network),
        gateway=r.iface(r.get(v, "gateway", k), f"{k}.gateway"),
        bridge=r.field(v, "bridge", k, parse_ifname),
        mtu=r.field(v, "mtu", k, parse_int, 576, 9000),
    )


def _service(r: Reader, k: str, sv: dict[str, Any]) -> ServiceSpec:
    return ServiceSpec(
        vpc=r.field(sv, "vpc", k, parse_label),
        name=r.field(sv, "name", k, parse_label),
        vip=r.field(sv, "vip", k, parse_address),
        ports=tuple(
            parse_portspec(x, r.where(f"{k}.ports"))
            for x in r.lst(r.get(sv, "ports", k), f"{k}.ports")
        ),
        backends=tuple(
            parse_address(x, r.where(f"{k}.backends"))
            for x in r.lst(r.get(sv, "backends", k), f"{k}.backends")
        ),
        selector=make_selector(
            (
                (
                    parse_label_key(key, r.where(f"{k}.selector")),
                    parse_label_value(value, r.where(f"{k}.selector.{key}")),
                )
                for key, value in r.mapping(sv.get("selector", {}), f"{k}.selector").items()
            ),
            r.where(f"{k}.selector"),
        ),
    )


def from_dict(raw: object, source: str = "spec") -> HostSpec:
    r = Reader(source, error=SpecError, hint="render it with `vpcctl render`", fmt="json")
    top = r.mapping(raw, "(top)")
    version = r.get(top, "version", "version")
    if version != SPEC_VERSION:
        raise SpecError(
            f"{r.where('version')}: unsupported HostSpec version {version!r}",
            "use the same vpcctl version on the admin machine and on the host",
        )
    iface = r.mapping(r.get(top, "interface", "interface"), "interface")
    key_file = r.get(iface, "private_key_file", "interface.private_key_file")
    if not isinstance(key_file, str) or not key_file or "/" in key_file or key_file.startswith("."):
        raise SpecError(
            f"{r.where('interface.private_key_file')}: must be a plain file name",
            "e.g. private.key",
        )
    routing = r.get(top, "routing", "routing")
    if routing not in ("ipip", "wireguard"):
        raise SpecError(
            f"{r.where('routing')}: {routing!r} is not a routing mode", 'use "ipip" or "wireguard"'
        )
    pub = iface.get("public_key")
    tunnel_raw = top.get("tunnel")
    tunnel = None
    if tunnel_raw is not None:
        t = r.mapping(tunnel_raw, "tunnel")
        tunnel = TunnelSpec(
            name=parse_ifname(r.get(t, "name", "tunnel.name"), r.where("tunnel.name")),
            local=parse_address(r.get(t, "local", "tunnel.local"), r.where("tunnel.local")),
            mtu=parse_int(r.get(t, "mtu", "tunnel.mtu"), r.where("tunnel.mtu"), 576, 9000),
        )
    peers = tuple(_peer(r, k, x) for k, x in r.records(top, "peers"))
    routes = tuple(_route(r, k, x) for k, x in r.records(top, "routes"))
    vpcs = tuple(_vpc(r, k, x) for k, x in r.records(top, "vpcs"))
    services = tuple(_service(r, k, x) for k, x in r.records(top, "services"))
    return HostSpec(
        version=version,
        mesh=parse_label(r.get(top, "mesh", "mesh"), r.where("mesh")),
        host=parse_label(r.get(top, "host", "host"), r.where("host")),
        interface=parse_ifname(r.get(iface, "name", "interface.name"), r.where("interface.name")),
        address=r.iface(r.get(iface, "address", "interface.address"), "interface.address"),
        port=parse_port(r.get(iface, "port", "interface.port"), r.where("interface.port")),
        mtu=parse_int(r.get(iface, "mtu", "interface.mtu"), r.where("interface.mtu"), 576, 9000),
        public_key=None if pub is None else parse_public_key(pub, r.where("interface.public_key")),
        private_key_file=key_file,
        routing=routing,
        tunnel=tunnel,
        peers=peers,
        routes=routes,
        vpcs=vpcs,
        services=services,
        dns=zone_from_dict(r.get(top, "dns", "dns"), source),
        daemon=_daemon(r, top.get("daemon")),
        psk=r.boolean(top.get("psk", False), "psk"),
        clients=_clients(r, top),
    )


def _daemon(r: Reader, raw: object) -> DaemonSpec:
    if raw is None:
        return DaemonSpec()
    d = r.mapping(raw, "daemon")
    return DaemonSpec(
        enabled=r.boolean(d.get("enabled", False), "daemon.enabled"),
        port=parse_port(d.get("port", DAEMON_PORT), r.where("daemon.port")),
        grace=parse_int(d.get("grace", DEFAULT_GRACE), r.where("daemon.grace"), 1, 3600),
        metrics=parse_metrics(d.get("metrics", "off"), r.where("daemon.metrics")),
    )


def zone_from_dict(raw: object, source: str = "zone") -> ZoneData:
    r = Reader(source, error=SpecError, hint="render it with `vpcctl render`", fmt="json")
    d = r.mapping(raw, "dns")
    hosts = r.mapping(r.get(d, "hosts", "dns"), "dns.hosts")
    vpcs = []
    for i, v in enumerate(r.lst(r.get(d, "vpcs", "dns"), "dns.vpcs")):
        k = f"dns.vpcs[{i}]"
        v = r.mapping(v, k)
        containers = r.mapping(r.get(v, "containers", k), f"{k}.containers")
        svcs = r.mapping(r.get(v, "services", k), f"{k}.services")
        vpcs.append(
            ZoneVpc(
                name=r.field(v, "name", k, parse_label),
                cidr=r.field(v, "cidr", k, parse_network),
                containers=tuple(
                    (
                        parse_label(n, r.where(f"{k}.containers")),
                        parse_address(ip, r.where(f"{k}.containers.{n}")),
                    )
                    for n, ip in containers.items()
                ),
                services=tuple(
                    (
                        parse_label(n, r.where(f"{k}.services")),
                        parse_address(
                            r.get(r.mapping(s, f"{k}.services.{n}"), "vip", f"{k}.services.{n}"),
                            r.where(f"{k}.services.{n}.vip"),
                        ),
                        tuple(
                            parse_portspec(x, r.where(f"{k}.services.{n}.ports"))
                            for x in r.lst(s.get("ports", []), f"{k}.services.{n}.ports")
                        ),
                    )
                    for n, s in svcs.items()
                ),
            )
        )
    return ZoneData(
        domain=parse_domain(r.get(d, "domain", "dns"), r.where("dns.domain")),
        ttl=parse_int(r.get(d, "ttl", "dns"), r.where("dns.ttl"), 0, 86400),
        mesh_cidr=parse_network(r.get(d, "mesh_cidr", "dns"), r.where("dns.mesh_cidr")),
        hosts=tuple(
            (parse_label(n, r.where("dns.hosts")), parse_address(ip, r.where(f"dns.hosts.{n}")))
            for n, ip in hosts.items()
        ),
        vpcs=tuple(vpcs),
        clients=tuple(
            (
                parse_address(a, r.where("dns.clients")),
                tuple(
                    parse_label(v, r.where(f"dns.clients.{a}"), "VPC name")
                    for v in r.lst(vs, f"dns.clients.{a}")
                ),
            )
            for a, vs in r.mapping(d.get("clients", {}), "dns.clients").items()
        ),
    )
