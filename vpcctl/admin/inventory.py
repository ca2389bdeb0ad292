"""The inventory file ``vpc.toml``: find, parse into typed values, validate, dump canonically,
write atomically under an exclusive lock.

Parsing and dumping are pure (text in, values out and back); only :func:`load`, :func:`save`,
:func:`locked` and :func:`find` touch the disk.

The file holds no secrets. It is owned by vpcctl: comments written by hand are allowed, but every
write rewrites the file in canonical form (stable ordering, one table per object), so that
``load`` then ``dump`` is byte-identical and changing one object changes only that object's lines.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import tomli_w

from vpcctl.admin import limits
from vpcctl.core.errors import InventoryError, ValidationError
from vpcctl.core.lock import lock_path as _sidecar
from vpcctl.core.lock import locked
from vpcctl.core.model import (
    DAEMON_PORT,
    DEFAULT_DOMAIN,
    DEFAULT_GRACE,
    DEFAULT_INTERFACE,
    DEFAULT_PORT,
    DEFAULT_ROUTING,
    DEFAULT_SLICE_PREFIX,
    MTU_MAX,
    MTU_MIN,
    ROUTINGS,
    SCHEMA_VERSION,
    WG_MTU,
    Client,
    Container,
    Host,
    Inventory,
    Mesh,
    Service,
    Vpc,
    gateway,
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
    parse_range,
    parse_ssh,
    relays_of,
    split_key,
)
from vpcctl.core.reader import Reader, toml_key

FILENAME = "vpc.toml"
ENV_VAR = "VPCCTL_INVENTORY"
HEADER = (
    "# vpcctl inventory: the whole network, no secrets. Owned by vpcctl, which rewrites it in\n"
    "# canonical form; edit with `vpcctl` commands, review with git, check with `vpcctl check`.\n"
)

# ---------------------------------------------------------------------------------------------
# finding the file


def find(explicit: Path | None = None, start: Path | None = None) -> Path:
    """``-i PATH``, else ``$VPCCTL_INVENTORY``, else ``vpc.toml`` in this directory or a parent."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILENAME
        if candidate.is_file():
            return candidate
    raise InventoryError(
        f"no {FILENAME} in {here} or any parent directory",
        f"run `vpcctl init NAME` to create one, or point to it with -i PATH or ${ENV_VAR}",
    )


def init_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / FILENAME


# ---------------------------------------------------------------------------------------------
# parsing (pure)


def parse_toml(text: str, source: str = FILENAME) -> dict[str, Any]:
    """TOML text -> the raw dict, every syntax problem as one :class:`InventoryError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = "fix the TOML syntax at that line"
        if "twice" in str(exc):
            hint = "a git merge may have added the same table twice: keep one (then `vpcctl check`)"
        raise InventoryError(f"{source}: {exc}", hint) from None
    except RecursionError:
        raise InventoryError(
            f"{source}: nested too deeply to read", "an inventory never nests more than 3 levels"
        ) from None


def parse(text: str, source: str = FILENAME) -> Inventory:
    """TOML text -> validated :class:`Inventory` (syntax, types, then cross-object checks)."""
    inv = from_dict(parse_toml(text, source), source)
    found = problems(inv, source)
    if found:
        raise found[0]
    return inv


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{where}: expected true or false", "e.g. daemon = true")
    return value


def from_dict(raw: Mapping[str, Any], source: str = FILENAME) -> Inventory:
    r = Reader(source)
    r.keys(raw, "", ("version", "mesh"), ("hosts", "vpcs", "containers", "services", "clients"))
    version = raw["version"]
    if type(version) is not int or version != SCHEMA_VERSION:  # True == 1 == 1.0 in Python
        raise ValidationError(
            f"{r.where('version')}: unsupported schema version {version!r}",
            f"this vpcctl reads version {SCHEMA_VERSION}; upgrade vpcctl to read newer files",
        )
    m = r.mapping(raw["mesh"], "mesh")
    r.keys(
        m, "mesh", ("name", "cidr"),
        ("port", "interface", "domain", "routing", "daemon", "daemon_port", "grace", "mtu",
         "metrics", "psk"),
    )  # fmt: skip
    routing = m.get("routing", DEFAULT_ROUTING)
    if routing not in ROUTINGS:
        raise ValidationError(
            f"{r.where('mesh.routing')}: {routing!r} is not a routing mode",
            'use "ipip" (default) or "wireguard" (for kernels without ipip)',
        )
    mesh = Mesh(
        name=parse_label(m["name"], r.where("mesh.name"), "mesh name"),
        cidr=parse_range(m["cidr"], r.where("mesh.cidr")),
        port=parse_port(m.get("port", DEFAULT_PORT), r.where("mesh.port")),
        interface=parse_ifname(m.get("interface", DEFAULT_INTERFACE), r.where("mesh.interface")),
        domain=parse_domain(m.get("domain", DEFAULT_DOMAIN), r.where("mesh.domain")),
        routing=routing,
        daemon=_boolean(m.get("daemon", False), r.where("mesh.daemon")),
        daemon_port=parse_port(m.get("daemon_port", DAEMON_PORT), r.where("mesh.daemon_port")),
        grace=parse_int(m.get("grace", DEFAULT_GRACE), r.where("mesh.grace"), 1, 3600),
        mtu=parse_int(m.get("mtu", WG_MTU), r.where("mesh.mtu"), MTU_MIN, MTU_MAX),
        metrics=parse_metrics(m.get("metrics", "off"), r.where("mesh.metrics")),
        psk=_boolean(m.get("psk", False), r.where("mesh.psk")),
    )

    hosts: dict[str, Host] = {}
    for name, key, t in r.tables(
        raw, "hosts", ("ssh", "address"), ("endpoint", "public_key", "agent", "slices", "relay")
    ):
        slices: dict[str, IPv4Network] = {}
        for vpc, cidr in r.mapping(t.get("slices", {}), f"{key}.slices").items():
            where = r.where(f"{key}.slices.{toml_key(vpc)}")
            slices[parse_label(vpc, where, "VPC name")] = parse_network(cidr, where)
        hosts[name] = Host(
            name=parse_label(name, r.where(key), "host name"),
            ssh=parse_ssh(t["ssh"], r.where(f"{key}.ssh")),
            address=parse_address(t["address"], r.where(f"{key}.address")),
            endpoint=(
                parse_endpoint(t["endpoint"], r.where(f"{key}.endpoint"))
                if "endpoint" in t
                else None
            ),
            public_key=(
                parse_public_key(t["public_key"], r.where(f"{key}.public_key"))
                if "public_key" in t
                else None
            ),
            agent=r.string(t["agent"], f"{key}.agent") if "agent" in t else None,
            slices=slices,
            relay=(
                parse_label(t["relay"], r.where(f"{key}.relay"), "host name")
                if "relay" in t
                else None
            ),
        )

    vpcs: dict[str, Vpc] = {}
    for name, key, t in r.tables(raw, "vpcs", ("cidr", "services"), ("slice_prefix",)):
        cidr = parse_range(t["cidr"], r.where(f"{key}.cidr"))
        vpcs[name] = Vpc(
            name=parse_label(name, r.where(key), "VPC name"),
            cidr=cidr,
            slice_prefix=parse_int(
                t.get("slice_prefix", DEFAULT_SLICE_PREFIX),
                r.where(f"{key}.slice_prefix"),
                cidr.prefixlen + 1,
                30,
            ),
            services=parse_range(t["services"], r.where(f"{key}.services")),
        )

    containers: dict[str, Container] = {}
    for name, key, t in r.tables(raw, "containers", ("host", "ip"), ()):
        vpc, cname = split_key(name, r.where(key))
        containers[name] = Container(
            vpc=vpc,
            name=cname,
            host=parse_label(t["host"], r.where(f"{key}.host"), "host name"),
            ip=parse_address(t["ip"], r.where(f"{key}.ip")),
        )

    services: dict[str, Service] = {}
    for name, key, t in r.tables(raw, "services", ("vip", "ports"), ("backends", "selector")):
        vpc, sname = split_key(name, r.where(key))
        ports, backends = t["ports"], t.get("backends", [])
        if not isinstance(ports, list) or not ports:
            raise ValidationError(
                f"{r.where(f'{key}.ports')}: expected a non-empty list",
                'e.g. ports = ["postgres=5432/tcp"]',
            )
        if not isinstance(backends, list):
            raise ValidationError(
                f"{r.where(f'{key}.backends')}: expected a list of container names",
                'e.g. backends = ["db-1", "db-2"]',
            )
        services[name] = Service(
            vpc=vpc,
            name=sname,
            vip=parse_address(t["vip"], r.where(f"{key}.vip")),
            ports=tuple(parse_portspec(p, r.where(f"{key}.ports")) for p in ports),
            backends=tuple(
                parse_label(b, r.where(f"{key}.backends"), "container name") for b in backends
            ),
            selector=make_selector(
                (
                    (
                        parse_label_key(k, r.where(f"{key}.selector")),
                        parse_label_value(v, r.where(f"{key}.selector.{toml_key(k)}")),
                    )
                    for k, v in r.mapping(t.get("selector", {}), f"{key}.selector").items()
                ),
                r.where(f"{key}.selector"),
            ),
        )
    return Inventory(
        mesh=mesh, hosts=hosts, vpcs=vpcs, containers=containers, services=services,
        clients=_clients(r, raw),
    )  # fmt: skip


def _clients(r: Reader, raw: Mapping[str, Any]) -> dict[str, Client]:
    clients: dict[str, Client] = {}
    for name, key, t in r.tables(raw, "clients", ("via", "address", "public_key", "vpcs"), ()):
        vpcs = [parse_label(v, r.where(f"{key}.vpcs"), "VPC name") for v in r.lst(t["vpcs"], key)]
        if not vpcs or len(set(vpcs)) != len(vpcs):
            raise ValidationError(
                f"{r.where(f'{key}.vpcs')}: expected a non-empty list of distinct VPC names",
                'e.g. vpcs = ["prod"]',
            )
        clients[name] = Client(
            name=parse_label(name, r.where(key), "client name"),
            via=parse_label(t["via"], r.where(f"{key}.via"), "host name"),
            address=parse_address(t["address"], r.where(f"{key}.address")),
            public_key=parse_public_key(t["public_key"], r.where(f"{key}.public_key")),
            vpcs=tuple(sorted(vpcs)),
        )
    return clients


# ---------------------------------------------------------------------------------------------
# cross-object validation (pure)


def _overlaps(
    nets: list[tuple[IPv4Network, str]],
) -> Iterator[tuple[str, str, IPv4Network, IPv4Network]]:
    """Overlapping pairs among ``nets`` in O(n log n) (sorted sweep)."""
    ordered = sorted(nets, key=lambda item: (int(item[0].network_address), -item[0].prefixlen))
    reach = -1
    holder: tuple[IPv4Network, str] | None = None
    for net, label in ordered:
        if holder is not None and int(net.network_address) <= reach:
            yield holder[1], label, holder[0], net
        if int(net.broadcast_address) > reach:
            reach = int(net.broadcast_address)
            holder = (net, label)


Bad = Callable[[str, str, str], None]  # (key, problem, hint): record one problem


def problems(inv: Inventory, source: str = FILENAME) -> list[ValidationError]:
    """Every cross-object problem: overlaps, duplicates, dangling references.

    This is what ``vpcctl check`` reports, e.g. after a git merge allocated the same address twice.
    """
    out: list[ValidationError] = []

    def bad(key: str, problem: str, hint: str) -> None:
        out.append(ValidationError(f"{source}: {key}: {problem}", hint))

    for check in (_cidr_problems, _host_problems, _vpc_problems, _container_problems,
                  _service_problems, _client_problems):  # fmt: skip
        check(inv, bad)
    out.extend(limits.problems(inv, source))  # names and ranges that cannot work
    return out


def _cidr_problems(inv: Inventory, bad: Bad) -> None:
    mesh = inv.mesh
    nets = [(mesh.cidr, "mesh.cidr")] + [(v.cidr, f"vpcs.{v.name}.cidr") for v in inv.vpcs.values()]
    for a, b, na, nb in _overlaps(nets):
        bad(b, f"{nb} overlaps {a} ({na})", "every VPC and the mesh need CIDRs that do not overlap")


def _host_problems(inv: Inventory, bad: Bad) -> None:
    by_address: dict[IPv4Address, str] = {}
    by_key: dict[str, str] = {}
    mesh = inv.mesh
    first, last = mesh.cidr.network_address + 1, mesh.cidr.broadcast_address - 1
    for host in inv.hosts.values():
        key = f"hosts.{host.name}"
        if host.name in inv.vpcs:
            bad(
                key,
                f"host name {host.name!r} is also a VPC name",
                "DNS names would clash: rename one",
            )
        if not first <= host.address <= last:
            bad(
                f"{key}.address",
                f"{host.address} is not a usable address of {mesh.cidr}",
                "use `vpcctl host add` to allocate",
            )
        elif host.address in by_address:
            bad(
                f"{key}.address",
                f"{host.address} is also the address of host {by_address[host.address]}",
                "duplicate address (a merge?): remove the host and add it again",
            )
        else:
            by_address[host.address] = host.name
        if host.public_key is not None:
            if host.public_key in by_key:
                bad(
                    f"{key}.public_key",
                    f"same public key as host {by_key[host.public_key]}",
                    "every host needs its own key: run `vpcctl join` again on one of them",
                )
            else:
                by_key[host.public_key] = host.name
        if host.relay is not None:
            relay = inv.hosts.get(host.relay)
            if relay is None or relay.endpoint is None or relay.name == host.name:
                bad(f"{key}.relay", f"{host.relay!r} is not another host with an endpoint",
                    "name a host others can dial, or remove `relay` (one is chosen then)")  # fmt: skip
        for sv in host.slices:
            if sv not in inv.vpcs:
                bad(
                    f"{key}.slices.{sv}",
                    f"no VPC named {sv!r}",
                    "remove the slice or add the VPC",
                )


def _client_problems(inv: Inventory, bad: Bad) -> None:
    """A client needs a gateway host with an endpoint and a public key, VPCs that exist, an
    address of the mesh CIDR no host or other client has, and a key of its own."""
    mesh = inv.mesh
    first, last = mesh.cidr.network_address + 1, mesh.cidr.broadcast_address - 1
    taken = {h.address: f"host {h.name}" for h in inv.hosts.values()}
    keys = {h.public_key: f"host {h.name}" for h in inv.hosts.values() if h.public_key}
    for c in sorted(inv.clients.values(), key=lambda c: c.name):
        key = f"clients.{c.name}"
        gw = inv.hosts.get(c.via)
        if gw is None:
            bad(f"{key}.via", f"no host named {c.via!r}", "see `vpcctl host ls`")
        elif gw.endpoint is None or gw.public_key is None:
            bad(
                f"{key}.via",
                f"gateway host {c.via} has no endpoint or no public key",
                f"vpcctl host set {c.via} --endpoint HOST:PORT (and `vpcctl join` it)",
            )
        for v in c.vpcs:
            if v not in inv.vpcs:
                bad(f"{key}.vpcs", f"no VPC named {v!r}", "remove it or add the VPC")
        if not first <= c.address <= last:
            bad(f"{key}.address", f"{c.address} is not a usable address of {mesh.cidr}",
                "use `vpcctl client add` to allocate")  # fmt: skip
        elif c.address in taken:
            bad(f"{key}.address", f"{c.address} is also the address of {taken[c.address]}",
                "duplicate address (a merge?): remove the client and add it again")  # fmt: skip
        else:
            taken[c.address] = f"client {c.name}"
        if c.public_key in keys:
            bad(f"{key}.public_key", f"same public key as {keys[c.public_key]}",
                "remove the client and add it again: it gets a new key")  # fmt: skip
        else:
            keys[c.public_key] = f"client {c.name}"


def _vpc_problems(inv: Inventory, bad: Bad) -> None:
    for vpc in inv.vpcs.values():
        key = f"vpcs.{vpc.name}"
        if not vpc.services.subnet_of(vpc.cidr):
            bad(
                f"{key}.services",
                f"{vpc.services} is not inside {vpc.cidr}",
                "the service range must be part of the VPC CIDR",
            )
        slices: list[tuple[IPv4Network, str]] = [(vpc.services, f"{key}.services")]
        for host in inv.hosts.values():
            s = host.slices.get(vpc.name)
            skey = f"hosts.{host.name}.slices.{vpc.name}"
            if s is None:
                bad(
                    f"hosts.{host.name}",
                    f"has no slice in VPC {vpc.name}",
                    f"add one with `vpcctl vpc add {vpc.name}` again or remove the host and add it again",
                )
                continue
            if not s.subnet_of(vpc.cidr):
                bad(
                    skey,
                    f"{s} is not inside VPC {vpc.name} ({vpc.cidr})",
                    "let vpcctl allocate slices",
                )
            elif s.prefixlen != vpc.slice_prefix:
                bad(
                    skey,
                    f"{s} is not a /{vpc.slice_prefix}",
                    f"slices of VPC {vpc.name} are /{vpc.slice_prefix}",
                )
            slices.append((s, skey))
        for a, b, na, nb in _overlaps(slices):
            bad(
                b,
                f"{nb} overlaps {a} ({na})",
                "duplicate slice (a merge?): remove the host and add it again",
            )


def _container_problems(inv: Inventory, bad: Bad) -> None:
    seen_ip: dict[tuple[str, IPv4Address], str] = {}
    for c in inv.containers.values():
        key = f'containers."{c.key}"'
        if c.vpc not in inv.vpcs:
            bad(key, f"no VPC named {c.vpc!r}", "add the VPC first or remove the container")
            continue
        chost = inv.hosts.get(c.host)
        if chost is None:
            bad(
                f"{key}.host",
                f"no host named {c.host!r}",
                "add the host first or move the container",
            )
            continue
        s = chost.slices.get(c.vpc)
        if s is not None and (
            c.ip not in s or c.ip in (s.network_address, s.broadcast_address, gateway(s).ip)
        ):
            bad(
                f"{key}.ip",
                f"{c.ip} is not a container address of {c.host}'s slice {s}",
                "let vpcctl allocate it (leave --ip out)",
            )
        if (c.vpc, c.ip) in seen_ip:
            bad(
                f"{key}.ip",
                f"{c.ip} is also the address of container {seen_ip[(c.vpc, c.ip)]}",
                "duplicate address (a merge?): remove one and add it again",
            )
        else:
            seen_ip[(c.vpc, c.ip)] = c.key


def _service_problems(inv: Inventory, bad: Bad) -> None:
    seen_vip: dict[tuple[str, IPv4Address], str] = {}
    for svc in inv.services.values():
        key = f'services."{svc.key}"'
        svpc = inv.vpcs.get(svc.vpc)
        if svpc is None:
            bad(key, f"no VPC named {svc.vpc!r}", "add the VPC first or remove the service")
            continue
        if svc.key in inv.containers:
            bad(
                key,
                f"a container is also named {svc.name!r} in VPC {svc.vpc}",
                "names in a VPC share one DNS namespace: rename one",
            )
        if svc.vip not in svpc.services or svc.vip in (
            svpc.services.network_address,
            svpc.services.broadcast_address,
        ):
            bad(
                f"{key}.vip",
                f"{svc.vip} is not in VPC {svc.vpc}'s service range {svpc.services}",
                "let vpcctl allocate it",
            )
        if (svc.vpc, svc.vip) in seen_vip:
            bad(
                f"{key}.vip",
                f"{svc.vip} is also the VIP of service {seen_vip[(svc.vpc, svc.vip)]}",
                "duplicate VIP (a merge?): remove one service and add it again",
            )
        else:
            seen_vip[(svc.vpc, svc.vip)] = svc.key
        _service_ports_and_backends(inv, svc, key, bad)


def _service_ports_and_backends(inv: Inventory, svc: Service, key: str, bad: Bad) -> None:
    ports_seen: set[tuple[int, str]] = set()
    names_seen: set[str] = set()
    for p in svc.ports:
        if (p.port, p.proto) in ports_seen:
            bad(f"{key}.ports", f"port {p.port}/{p.proto} listed twice", "list each port once")
        ports_seen.add((p.port, p.proto))
        if p.name is not None:
            if p.name in names_seen:
                bad(f"{key}.ports", f"port name {p.name!r} listed twice", "name each port once")
            names_seen.add(p.name)
    for b in svc.backends:
        if f"{svc.vpc}/{b}" not in inv.containers:
            bad(
                f"{key}.backends",
                f"no container {b!r} in VPC {svc.vpc}",
                f"add it with `vpcctl container add {b} --vpc {svc.vpc} --host HOST`, or remove the backend",
            )
    if len(set(svc.backends)) != len(svc.backends):
        bad(f"{key}.backends", "a backend is listed twice", "list each backend once")


def check_file(
    path: Path,
) -> tuple[Inventory | None, list[ValidationError], list[str], bool]:
    """`vpcctl check`: (the inventory if it could be read, every problem, every warning, whether
    the file is in canonical form). A TOML syntax error raises, as :func:`parse` words it."""
    text = read_text(path)
    raw = parse_toml(text, str(path))  # a syntax error is the one error
    try:
        inv = from_dict(raw, str(path))
    except ValidationError as exc:
        return None, [exc], [], False
    found = problems(inv, str(path))
    return inv, found, warnings(inv), not found and dump(inv) == text


def warnings(inv: Inventory) -> list[str]:
    """Things that are valid but probably not what the admin wants."""
    out: list[str] = []
    nat = sorted(h.name for h in inv.hosts.values() if h.endpoint is None)
    relays = relays_of(inv)
    if len(nat) > 1 and not relays:
        out.append(
            f"hosts {', '.join(nat)} are all behind NAT (no endpoint): they cannot reach each other "
            "directly; give one of them a public endpoint"
        )
    elif len(nat) > 1:
        via = ", ".join(f"{n} via {relays[n]}" for n in nat if n in relays)
        out.append(
            f"hosts {', '.join(nat)} are behind NAT (no endpoint): they cannot dial each other, so "
            f"their traffic to each other goes through a relay ({via}); the relay decrypts and "
            're-encrypts it (WireGuard hop by hop, README "NAT to NAT")'
        )
    for key, net in limits.public_ranges(inv):
        out.append(
            f"{key} {net} is a public range: addresses there on the internet become unreachable "
            "from the mesh; prefer a private range (10/8, 172.16/12, 192.168/16)"
        )
    missing = sorted(h.name for h in inv.hosts.values() if h.public_key is None)
    if missing:
        out.append(
            f"hosts without a public key yet: {', '.join(missing)} (run `vpcctl join NAME` or "
            "`vpcctl host add NAME --public-key KEY`); they are left out of every peer list"
        )
    return out


# ---------------------------------------------------------------------------------------------
# dumping (pure)


def to_dict(inv: Inventory) -> dict[str, Any]:
    m = inv.mesh
    out: dict[str, Any] = {
        "version": inv.version,
        "mesh": {
            "name": m.name,
            "cidr": str(m.cidr),
            "port": m.port,
            "interface": m.interface,
            "domain": m.domain,
            "routing": m.routing,
        },
    }
    if m.daemon:
        out["mesh"]["daemon"] = True
    if m.daemon_port != DAEMON_PORT:
        out["mesh"]["daemon_port"] = m.daemon_port
    if m.grace != DEFAULT_GRACE:
        out["mesh"]["grace"] = m.grace
    if m.mtu != WG_MTU:
        out["mesh"]["mtu"] = m.mtu
    if m.metrics is not None:
        out["mesh"]["metrics"] = m.metrics
    if m.psk:
        out["mesh"]["psk"] = True
    hosts: dict[str, Any] = {}
    for name in sorted(inv.hosts):
        h = inv.hosts[name]
        t: dict[str, Any] = {"ssh": str(h.ssh), "address": str(h.address)}
        if h.endpoint is not None:
            t["endpoint"] = h.endpoint
        if h.public_key is not None:
            t["public_key"] = h.public_key
        if h.agent is not None:
            t["agent"] = h.agent
        if h.slices:
            t["slices"] = {vpc: str(h.slices[vpc]) for vpc in sorted(h.slices)}
        if h.relay is not None:
            t["relay"] = h.relay
        hosts[name] = t
    vpcs = {
        name: {
            "cidr": str(v.cidr),
            "slice_prefix": v.slice_prefix,
            "services": str(v.services),
        }
        for name, v in sorted(inv.vpcs.items())
    }
    containers = {
        key: {"host": c.host, "ip": str(c.ip)}
        for key, c in sorted(inv.containers.items(), key=lambda kv: (kv[1].vpc, kv[1].name))
    }
    services = {
        key: {
            "vip": str(s.vip),
            "ports": [str(p) for p in s.ports],
            "backends": list(s.backends),
            **({"selector": dict(s.selector)} if s.selector else {}),
        }
        for key, s in sorted(inv.services.items(), key=lambda kv: (kv[1].vpc, kv[1].name))
    }
    clients = {
        name: {"via": c.via, "address": str(c.address), "public_key": c.public_key,
               "vpcs": list(c.vpcs)}
        for name, c in sorted(inv.clients.items())
    }  # fmt: skip
    for section, body in (
        ("hosts", hosts),
        ("vpcs", vpcs),
        ("containers", containers),
        ("services", services),
        ("clients", clients),
    ):
        if body:
            out[section] = body
    return out


def dump(inv: Inventory) -> str:
    """Canonical TOML text. ``dump(parse(dump(x))) == dump(x)``, byte for byte."""
    return HEADER + "\n" + tomli_w.dumps(to_dict(inv))


# ---------------------------------------------------------------------------------------------
# disk I/O


def read_text(path: Path) -> str:
    """The inventory's text; every way reading can fail is one :class:`InventoryError`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(
            f"{path}: no such file", "run `vpcctl init NAME` first, or pass -i PATH"
        ) from None
    except IsADirectoryError:
        raise InventoryError(
            f"{path}: is a directory", f"pass the file, e.g. -i {path / FILENAME}"
        ) from None
    except UnicodeDecodeError as exc:
        raise InventoryError(
            f"{path}: not UTF-8 text (byte {exc.start})",
            "the inventory is UTF-8 TOML: restore it from git (`git checkout -- FILE`)",
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InventoryError(
            f"{path}: cannot read ({exc})", "check the path and its permissions"
        ) from None


def load(path: Path) -> Inventory:
    return parse(read_text(path), str(path))


def target(path: Path) -> Path:
    """Where writes go: a symlinked inventory is written through to the file it points to (the
    link stays a link), and the lock and temp files sit beside that file."""
    try:
        return Path(os.path.realpath(path)) if path.is_symlink() else path
    except (OSError, ValueError):
        return path


def temp_pattern(path: Path) -> str:
    """The glob of :func:`write_atomic`'s temp files (``.vpc.toml.*.tmp``), for .gitignore."""
    return f".{path.name}.*.tmp"


def _clean_stale_temps(path: Path, directory: Path) -> None:
    """Temp files a writer killed mid-way left behind (we hold the lock: nobody else writes)."""
    with contextlib.suppress(OSError):
        for stale in directory.glob(temp_pattern(path)):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory. Call it under
    :func:`locked`: it also removes temp files an earlier, killed writer left behind."""
    path = target(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        _write_atomic(path, directory, text)
    except OSError as exc:
        raise InventoryError(
            f"{path}: cannot write ({exc.strerror or exc})",
            f"check that {directory} is writable and has free space; the file is unchanged",
        ) from None


def _write_atomic(path: Path, directory: Path, text: str) -> None:
    _clean_stale_temps(path, directory)
    mode = 0o644
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def lock_path(path: Path) -> Path:
    """The lock file beside the inventory (beside its target when it is a symlink)."""
    return _sidecar(target(path))


def ignore_lock_file(path: Path) -> Path | None:
    """In a git work tree, list the lock file and the temp files of an interrupted write in the
    directory's .gitignore (once). Returns the .gitignore it changed, if any; a .gitignore that
    cannot be read or written is an :class:`InventoryError` (the inventory itself is fine)."""
    path = target(path)
    directory = path.resolve().parent
    if not any((d / ".git").exists() for d in (directory, *directory.parents)):
        return None
    gitignore = directory / ".gitignore"
    wanted = [lock_path(path).name, temp_pattern(path)]
    try:
        try:
            text = gitignore.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        lines = text.splitlines()
        missing = [name for name in wanted if name not in lines]
        if not missing:
            return None
        with open(gitignore, "a", encoding="utf-8") as handle:
            if text and not text.endswith("\n"):
                handle.write("\n")
            handle.write("".join(f"{name}\n" for name in missing))
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(
            f"{gitignore}: cannot add {', '.join(wanted)} ({exc})",
            f"add those lines to a .gitignore yourself; {path} was created",
        ) from None
    return gitignore


def update(path: Path, change: Callable[[Inventory], Inventory], wait: float = 30.0) -> Inventory:
    """Load under the lock, apply a pure change, validate, write atomically. All or nothing."""
    with locked(target(path), wait):
        before = load(path)
        after = change(before)
        found = problems(after, str(path))
        if found:
            raise found[0]
        text = dump(after)
        write_atomic(path, text)
        return after


def create(path: Path, inv: Inventory) -> None:
    if "\0" in str(path):
        raise InventoryError(f"{path!r}: a path cannot hold a NUL byte", "check the path")
    try:
        path.lstat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a name too long, a file where a directory should be...
        raise InventoryError(f"{path}: {exc.strerror or exc}", "check the path") from None
    if path.is_dir():
        raise InventoryError(
            f"{path}: is a directory", f"pass a file name, e.g. -i {path / FILENAME}"
        )
    if path.exists():
        raise InventoryError(
            f"{path}: already exists", "use the existing inventory, or pick another path with -i"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise InventoryError(
            f"{path.parent}: cannot create the directory ({exc})", "check the path"
        ) from None
    with locked(path, 5.0):
        if path.exists():
            raise InventoryError(f"{path}: already exists", "use the existing inventory")
        write_atomic(path, dump(inv))
