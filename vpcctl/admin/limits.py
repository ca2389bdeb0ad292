"""Cross-object rules that keep names and ranges workable (README "Names", "Addressing").

Pure: an inventory in, every problem out. :func:`vpcctl.admin.inventory.problems` includes these,
so they hold at every entry point: each command that writes, ``load`` of a hand-edited file, and
``vpcctl check`` after a merge.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

from vpcctl.core import names
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import Inventory, is_public


def _literal_ipv4(host: str) -> IPv4Address | None:
    try:
        return IPv4Address(host)
    except ValueError:
        return None


def underlay_addresses(inv: Inventory) -> Iterator[tuple[str, IPv4Address]]:
    """``(key, address)`` for every IPv4 literal a host is reached at (endpoint, SSH target)."""
    for host in inv.hosts.values():
        if host.endpoint is not None:
            ip = _literal_ipv4(host.endpoint.rpartition(":")[0])
            if ip is not None:
                yield f"hosts.{host.name}.endpoint", ip
        ip = _literal_ipv4(host.ssh.host)
        if ip is not None:
            yield f"hosts.{host.name}.ssh", ip


def problems(inv: Inventory, source: str) -> list[ValidationError]:
    out: list[ValidationError] = []

    def bad(key: str, problem: str, hint: str) -> None:
        out.append(ValidationError(f"{source}: {key}: {problem}", hint))

    mesh = inv.mesh
    # kernel names: unique on a host, never a system name, never in a derived family
    family = names.owned_family(mesh.interface)
    if family is not None:
        bad(
            "mesh.interface",
            f"{mesh.interface!r} looks like a name vpcctl derives for a {family}",
            f'pick a name that neither starts with "{names.BRIDGE_PREFIX}" nor ends with '
            f'"{names.TUNNEL_SUFFIX}", e.g. "vpc0"',
        )
    for name, what, other in names.collisions(mesh.interface, inv.vpcs):
        if what.startswith("the bridge of VPC "):
            vpc = what.removeprefix("the bridge of VPC ")
            bad(
                f"vpcs.{vpc}",
                f"{what} would be {name!r}, which is already {other}",
                "long VPC names are cut to 15 characters with a checksum: rename this VPC "
                "(a shorter name, or one that differs in its first 7 characters)",
            )
        else:
            bad(
                "mesh.interface",
                f"{what} would be {name!r}, which is already {other}",
                'pick another interface name, e.g. "vpc0"',
            )

    # ranges that swallow the underlay would route SSH and WireGuard itself into the tunnel
    ranges = [("mesh.cidr", mesh.cidr)] + [
        (f"vpcs.{v.name}.cidr", v.cidr) for v in inv.vpcs.values()
    ]
    for key, ip in underlay_addresses(inv):
        for rkey, net in ranges:
            if ip in net:
                bad(
                    rkey,
                    f"{net} contains {ip}, the address in {key}",
                    "the host would be routed into the tunnel it is reached through: "
                    "pick a range that does not hold any host's underlay address",
                )
    for v in inv.vpcs.values():
        if v.services.prefixlen > 30:
            bad(
                f"vpcs.{v.name}.services",
                f"{v.services} has no usable VIP (network and broadcast addresses only)",
                "use at least a /30 (the default is the VPC's last slice-sized block)",
            )

    # DNS: every name the zone holds must fit
    d = mesh.domain
    checks: list[tuple[str, str]] = [("mesh.domain", f"hostmaster.{d}")]
    checks += [(f"hosts.{h}", f"{h}.{d}") for h in inv.hosts]
    checks += [(f"vpcs.{v}", f"{v}.{d}") for v in inv.vpcs]
    for c in inv.containers.values():
        checks.append((f'containers."{c.key}"', f"{c.name}.{c.vpc}.{d}"))
    for s in inv.services.values():
        fqdn = f"{s.name}.{s.vpc}.{d}"
        checks.append((f'services."{s.key}"', fqdn))
        checks += [
            (f'services."{s.key}".ports', f"_{p.name}._{p.proto}.{fqdn}") for p in s.ports if p.name
        ]
    for key, fqdn in checks:
        why = names.too_long(fqdn)
        if why is not None:
            bad(
                key,
                f"DNS name {fqdn[:40]}... would be {why}",
                "use shorter names (or a shorter mesh domain)",
            )
    return out


def public_ranges(inv: Inventory) -> list[tuple[str, IPv4Network]]:
    nets = [("mesh.cidr", inv.mesh.cidr)] + [
        (f"vpcs.{v.name}.cidr", v.cidr) for v in inv.vpcs.values()
    ]
    return [(key, net) for key, net in nets if is_public(net)]
