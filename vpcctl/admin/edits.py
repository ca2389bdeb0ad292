"""Pure inventory changes: each takes an Inventory and returns a new one (or raises).

The CLI runs them through :func:`vpcctl.admin.inventory.update`, which holds the lock, validates the
result and writes it atomically, so a failing change leaves the file exactly as it was.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from vpcctl.admin import allocate
from vpcctl.core.errors import NotFoundError, ValidationError
from vpcctl.core.model import (
    DEFAULT_SLICE_PREFIX,
    Client,
    Container,
    Host,
    Inventory,
    Mesh,
    PortSpec,
    Routing,
    Selector,
    Service,
    SshTarget,
    Vpc,
)


def new(
    name: str,
    cidr: IPv4Network,
    *,
    port: int,
    interface: str,
    domain: str,
    routing: Routing,
    psk: bool = False,
) -> Inventory:
    if cidr.prefixlen > 30:
        raise ValidationError(f"--mesh-cidr {cidr} is too small", "use at most a /30 (e.g. a /24)")
    return Inventory(mesh=Mesh(name, cidr, port, interface, domain, routing, psk=psk))


def _exists(what: str, name: str, hint: str) -> ValidationError:
    return ValidationError(f"{what} {name!r} already exists", hint)


def _missing(what: str, name: str, hint: str) -> NotFoundError:
    return NotFoundError(f"no {what} named {name!r}", hint)


def add_host(
    inv: Inventory,
    name: str,
    ssh: SshTarget,
    *,
    endpoint: str | None = None,
    public_key: str | None = None,
    address: IPv4Address | None = None,
    agent: str | None = None,
) -> Inventory:
    if name in inv.hosts:
        raise _exists("host", name, "pick another name, or `vpcctl host rm` it first")
    if name in inv.vpcs:
        raise ValidationError(f"host name {name!r} is already a VPC name", "DNS names would clash")
    if public_key is not None:
        other = next((h.name for h in inv.hosts.values() if h.public_key == public_key), None)
        if other is not None:
            raise ValidationError(
                f"public key already belongs to host {other}", "every host needs its own key"
            )
    addr = allocate.host_address(inv, address)
    host = Host(
        name=name, ssh=ssh, address=addr, endpoint=endpoint, public_key=public_key, agent=agent
    )
    inv = replace(inv, hosts={**inv.hosts, name: host})
    slices = {vpc: allocate.vpc_slice(inv, vpc) for vpc in sorted(inv.vpcs)}
    return replace(inv, hosts={**inv.hosts, name: replace(host, slices=slices)})


def set_mesh(
    inv: Inventory,
    *,
    daemon: bool | None = None,
    daemon_port: int | None = None,
    grace: int | None = None,
    mtu: int | None = None,
    metrics: str | None = None,
    psk: bool | None = None,
) -> Inventory:
    """The agent daemon's settings of the mesh (README "Mesh table"); the WireGuard MTU;
    ``metrics`` "off" turns the metrics endpoint off; preshared keys."""
    mesh = inv.mesh
    if metrics is not None:
        mesh = replace(mesh, metrics=None if metrics == "off" else metrics)
    if psk is not None:
        mesh = replace(mesh, psk=psk)
    if daemon is not None:
        mesh = replace(mesh, daemon=daemon)
    if daemon_port is not None:
        mesh = replace(mesh, daemon_port=daemon_port)
    if grace is not None:
        mesh = replace(mesh, grace=grace)
    if mtu is not None:
        mesh = replace(mesh, mtu=mtu)
    return replace(inv, mesh=mesh)


def set_host(
    inv: Inventory,
    name: str,
    *,
    public_key: str | None = None,
    endpoint: str | None = None,
    clear_endpoint: bool = False,
    agent: str | None = None,
) -> Inventory:
    host = inv.hosts.get(name)
    if host is None:
        raise _missing("host", name, "see `vpcctl host ls`")
    if public_key is not None:
        other = next(
            (h.name for h in inv.hosts.values() if h.public_key == public_key and h.name != name),
            None,
        )
        if other is not None:
            raise ValidationError(
                f"public key already belongs to host {other}", "every host needs its own key"
            )
        host = replace(host, public_key=public_key)
    if endpoint is not None:
        host = replace(host, endpoint=endpoint)
    if clear_endpoint:
        host = replace(host, endpoint=None)
    if agent is not None:
        host = replace(host, agent=agent)
    return replace(inv, hosts={**inv.hosts, name: host})


def rm_host(inv: Inventory, name: str, *, force: bool = False) -> Inventory:
    if name not in inv.hosts:
        raise _missing("host", name, "see `vpcctl host ls`")
    served = sorted(c.name for c in inv.clients.values() if c.via == name)
    if served and not force:
        raise ValidationError(
            f"host {name} is the gateway of clients: {', '.join(served)}",
            "remove them first (`vpcctl client rm`), or pass --force to remove them too",
        )
    placed = sorted(c.key for c in inv.containers.values() if c.host == name)
    if placed and not force:
        raise ValidationError(
            f"host {name} still runs containers: {', '.join(placed)}",
            "move or remove them first, or pass --force to remove them too",
        )
    inv = replace(inv, clients={k: c for k, c in inv.clients.items() if c.via != name})
    gone = set(placed)
    hosts = {k: v for k, v in inv.hosts.items() if k != name}
    containers = {k: v for k, v in inv.containers.items() if k not in gone}
    services = {
        k: replace(
            s,
            backends=tuple(b for b in s.backends if f"{s.vpc}/{b}" not in gone),
        )
        for k, s in inv.services.items()
    }
    return replace(inv, hosts=hosts, containers=containers, services=services)


def add_vpc(
    inv: Inventory,
    name: str,
    cidr: IPv4Network,
    *,
    slice_prefix: int = DEFAULT_SLICE_PREFIX,
    services: IPv4Network | None = None,
) -> Inventory:
    if name in inv.vpcs:
        raise _exists("VPC", name, "pick another name, or `vpcctl vpc rm` it first")
    if name in inv.hosts:
        raise ValidationError(f"VPC name {name!r} is already a host name", "DNS names would clash")
    if not cidr.prefixlen < slice_prefix <= 30:
        raise ValidationError(
            f"--slice-prefix {slice_prefix} does not fit VPC CIDR {cidr}",
            f"use a prefix from {cidr.prefixlen + 1} to 30",
        )
    rng = services or allocate.default_service_range(cidr, slice_prefix)
    inv = replace(
        inv,
        vpcs={
            **inv.vpcs,
            name: Vpc(name=name, cidr=cidr, slice_prefix=slice_prefix, services=rng),
        },
    )
    hosts = dict(inv.hosts)
    taken: list[IPv4Network] = []
    for host_name in sorted(hosts):
        s = allocate.vpc_slice(inv, name, taken)
        taken.append(s)
        h = hosts[host_name]
        hosts[host_name] = replace(h, slices={**h.slices, name: s})
    return replace(inv, hosts=hosts)


def rm_vpc(inv: Inventory, name: str, *, force: bool = False) -> Inventory:
    if name not in inv.vpcs:
        raise _missing("VPC", name, "see `vpcctl vpc ls`")
    members = sorted(
        [c.key for c in inv.containers.values() if c.vpc == name]
        + [s.key for s in inv.services.values() if s.vpc == name]
        + [f"client {c.name}" for c in inv.clients.values() if name in c.vpcs]
    )
    if members and not force:
        raise ValidationError(
            f"VPC {name} still has containers or services"
            + (" or clients" if any(m.startswith("client ") for m in members) else "")
            + f": {', '.join(members)}",
            "remove them first, or pass --force to remove them too",
        )
    hosts = {
        k: replace(h, slices={v: s for v, s in h.slices.items() if v != name})
        for k, h in inv.hosts.items()
    }
    return replace(
        inv,
        vpcs={k: v for k, v in inv.vpcs.items() if k != name},
        hosts=hosts,
        containers={k: c for k, c in inv.containers.items() if c.vpc != name},
        services={k: s for k, s in inv.services.items() if s.vpc != name},
        clients={
            k: replace(c, vpcs=tuple(v for v in c.vpcs if v != name))
            for k, c in inv.clients.items()
            if c.vpcs != (name,)
        },
    )


def _free_name(inv: Inventory, vpc: str, name: str, what: str) -> str:
    """The key ``VPC/NAME`` of a new container or service (``what``): free in the VPC, where
    containers and services share one DNS namespace."""
    key = f"{vpc}/{name}"
    other = "service" if what == "container" else "container"
    section = {"container": inv.containers, "service": inv.services}
    if key in section[what]:
        raise _exists(what, key, f"pick another name, or `vpcctl {what} rm` it first")
    if key in section[other]:
        raise ValidationError(
            f"{key} is already a {other} name", "names in a VPC share one DNS namespace"
        )
    return key


def add_container(
    inv: Inventory, name: str, vpc: str, host: str, ip: IPv4Address | None = None
) -> Inventory:
    if vpc not in inv.vpcs:
        raise _missing("VPC", vpc, "see `vpcctl vpc ls`, or create it with `vpcctl vpc add`")
    if host not in inv.hosts:
        raise _missing("host", host, "see `vpcctl host ls`")
    key = _free_name(inv, vpc, name, "container")
    addr = allocate.container_ip(inv, vpc, host, ip)
    c = Container(vpc=vpc, name=name, host=host, ip=addr)
    return replace(inv, containers={**inv.containers, key: c})


def rm_container(inv: Inventory, name: str, vpc: str, *, force: bool = False) -> Inventory:
    key = f"{vpc}/{name}"
    if key not in inv.containers:
        raise _missing("container", key, "see `vpcctl container ls`")
    users = sorted(s.key for s in inv.services.values() if s.vpc == vpc and name in s.backends)
    if users and not force:
        raise ValidationError(
            f"container {key} is a backend of {', '.join(users)}",
            "remove it from those services first, or pass --force to drop it from them",
        )
    services = {
        k: replace(s, backends=tuple(b for b in s.backends if b != name)) if s.vpc == vpc else s
        for k, s in inv.services.items()
    }
    return replace(
        inv,
        containers={k: c for k, c in inv.containers.items() if k != key},
        services=services,
    )


def add_service(
    inv: Inventory,
    name: str,
    vpc: str,
    ports: tuple[PortSpec, ...],
    backends: tuple[str, ...],
    vip: IPv4Address | None = None,
    selector: Selector = (),
) -> Inventory:
    if vpc not in inv.vpcs:
        raise _missing("VPC", vpc, "see `vpcctl vpc ls`")
    key = _free_name(inv, vpc, name, "service")
    if not ports:
        raise ValidationError(
            "a service needs at least one --port", "e.g. --port postgres=5432/tcp"
        )
    for b in backends:
        if f"{vpc}/{b}" not in inv.containers:
            raise _missing(
                f"container in VPC {vpc}",
                b,
                f"add it with `vpcctl container add {b} --vpc {vpc} --host HOST` first",
            )
    addr = allocate.service_vip(inv, vpc, vip)
    svc = Service(vpc=vpc, name=name, vip=addr, ports=ports, backends=backends, selector=selector)
    return replace(inv, services={**inv.services, key: svc})


def rm_service(inv: Inventory, name: str, vpc: str) -> Inventory:
    key = f"{vpc}/{name}"
    if key not in inv.services:
        raise _missing("service", key, "see `vpcctl service ls`")
    return replace(inv, services={k: s for k, s in inv.services.items() if k != key})


def add_client(
    inv: Inventory, name: str, via: str, vpcs: tuple[str, ...], public_key: str
) -> Inventory:
    """A roaming client behind gateway host ``via`` that may reach ``vpcs`` (every VPC when
    empty). Its address is the highest free one of the mesh CIDR (allocate.client_address)."""
    if name in inv.clients:
        raise _exists("client", name, "pick another name, or `vpcctl client rm` it first")
    gw = inv.hosts.get(via)
    if gw is None:
        raise _missing("host", via, "--via names the gateway host: see `vpcctl host ls`")
    if gw.endpoint is None:
        raise ValidationError(
            f"gateway host {via} has no endpoint (it is behind NAT): a client cannot dial it",
            f"pick a host with an endpoint, or give it one: vpcctl host set {via} "
            "--endpoint HOST:PORT",
        )
    if gw.public_key is None:
        raise ValidationError(
            f"gateway host {via} has no public key yet", f"run `vpcctl join {via}` first"
        )
    for v in vpcs:
        if v not in inv.vpcs:
            raise _missing("VPC", v, "see `vpcctl vpc ls`")
    chosen = tuple(sorted(set(vpcs) or set(inv.vpcs)))
    if not chosen:
        raise ValidationError("the mesh has no VPC for a client to reach", "vpcctl vpc add ...")
    client = Client(
        name=name, via=via, address=allocate.client_address(inv), public_key=public_key,
        vpcs=chosen,
    )  # fmt: skip
    return replace(inv, clients={**inv.clients, name: client})


def rm_client(inv: Inventory, name: str) -> Inventory:
    if name not in inv.clients:
        raise _missing("client", name, "see `vpcctl client ls`")
    return replace(inv, clients={k: c for k, c in inv.clients.items() if k != name})
