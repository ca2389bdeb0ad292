"""Declared state + running state -> what a host serves now: live service backends and the zone
with discovered names (README "Containers and Docker"). Pure: values in, values out.

* :func:`live_backends`: each service's backends are its declared ones plus every running
  container of the service's VPC, on any host, whose labels contain the service's selector and
  that is ready. A declared backend that is also discovered and reported not ready leaves too.
* :func:`merge_zone`: discovered container names join the declared zone, so they resolve like
  declared ones (the zone builder gives them their VPC's views and their PTR records). Declared
  state wins every clash: a discovered name equal to a declared container, service, host or VPC
  name, or a discovered address equal to a declared container's or a service's, is left out and
  reported. Two hosts announcing one name: the ready one, else the first by (host, address), wins.

Both are deterministic: the same inputs, in any order, give the same output.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from vpcctl.core.endpoints import Endpoint
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import parse_label, selects
from vpcctl.core.spec import HostSpec, ZoneData, ZoneVpc

Backends = dict[tuple[str, str], tuple[IPv4Address, ...]]


def _order(e: Endpoint) -> tuple[str, str, int, str, bool, tuple[tuple[str, str], ...]]:
    return (e.vpc, e.name, int(e.address), e.host, e.ready, e.labels)


def live_backends(spec: HostSpec, endpoints: Iterable[Endpoint]) -> Backends:
    """(vpc, service) -> its live backend addresses, sorted and without duplicates.

    A discovered container counts for a service when it is in the service's VPC (its address
    inside the VPC's CIDR too), its labels contain every term of the selector and it is ready.
    A service without a selector keeps exactly its declared backends, less any that discovery
    reports as not ready."""
    cidrs: dict[str, IPv4Network] = {v.name: v.cidr for v in spec.dns.vpcs}
    cidrs.update({v.name: v.cidr for v in spec.vpcs})
    by_vpc: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        cidr = cidrs.get(e.vpc)
        if cidr is not None and e.address in cidr:
            by_vpc.setdefault(e.vpc, []).append(e)
    out: Backends = {}
    for svc in sorted(spec.services, key=lambda s: (s.vpc, s.name)):
        running = by_vpc.get(svc.vpc, [])
        ready = {e.address for e in running if e.ready}
        unready = {e.address for e in running if not e.ready} - ready
        live = {b for b in svc.backends if b not in unready}
        live.update(e.address for e in running if e.ready and selects(svc.selector, e.labels))
        out[(svc.vpc, svc.name)] = tuple(sorted(live))
    return out


def _valid_name(name: str) -> bool:
    try:
        parse_label(name, "discovered container")
    except ValidationError:
        return False
    return True


def merge_zone(zone: ZoneData, endpoints: Iterable[Endpoint]) -> tuple[ZoneData, tuple[str, ...]]:  # noqa: C901
    """The declared zone plus every discovered container name, and a message per clash.

    Never changes a declared record; the result's containers are sorted by name."""
    vpcs = {v.name: v for v in zone.vpcs}
    hosts = {name for name, _ in zone.hosts}
    messages: list[str] = []
    candidates: dict[str, dict[str, list[Endpoint]]] = {}
    for e in sorted(set(endpoints), key=_order):
        where = f"{e.vpc}: discovered container {e.name!r} ({e.address} on {e.host})"
        v = vpcs.get(e.vpc)
        if v is None:
            messages.append(f"{where}: no such VPC in the zone; ignored")
        elif e.address not in v.cidr:
            messages.append(f"{where}: address outside the VPC's {v.cidr}; ignored")
        elif not _valid_name(e.name):
            messages.append(f"{where}: not a DNS label; ignored")
        else:
            candidates.setdefault(e.vpc, {}).setdefault(e.name, []).append(e)
    merged: list[ZoneVpc] = []
    for v in zone.vpcs:
        found = candidates.get(v.name)
        if not found:
            merged.append(v)
            continue
        declared = {name: ip for name, ip in v.containers}
        owner = {ip: name for name, ip in v.containers}
        services = {name for name, _, _ in v.services}
        owner.update({vip: name for name, vip, _ in v.services})
        taken: dict[IPv4Address, str] = {}
        added: list[tuple[str, IPv4Address]] = []
        for name in sorted(found):
            ranked = sorted(found[name], key=lambda e: (not e.ready, e.host, int(e.address)))
            winner: Endpoint | None = None
            for e in ranked:
                where = f"{v.name}: discovered container {name!r} ({e.address} on {e.host})"
                if name in declared:
                    if declared[name] != e.address:
                        messages.append(
                            f"{where} clashes with the declared container {name!r} "
                            f"({declared[name]}): the declared one wins"
                        )
                elif name in services:
                    messages.append(
                        f"{where} clashes with the declared service {name!r}: the service wins"
                    )
                elif name in hosts or name in vpcs:
                    what = "host" if name in hosts else "VPC"
                    messages.append(f"{where} has the name of a {what}: left out")
                elif e.address in owner:
                    messages.append(
                        f"{where} has the address of the declared {owner[e.address]!r}: "
                        "the declared one wins"
                    )
                elif e.address in taken:
                    messages.append(
                        f"{where} has the address of the discovered {taken[e.address]!r}: left out"
                    )
                elif winner is not None:
                    messages.append(
                        f"{where} has the name of the one at {winner.address} on "
                        f"{winner.host}: that one answers"
                    )
                else:
                    winner = e
                    taken[e.address] = name
                    added.append((name, e.address))
        containers = tuple(sorted((*v.containers, *added), key=lambda t: (t[0], int(t[1]))))
        merged.append(ZoneVpc(name=v.name, cidr=v.cidr, containers=containers, services=v.services))
    out = ZoneData(
        domain=zone.domain,
        ttl=zone.ttl,
        mesh_cidr=zone.mesh_cidr,
        hosts=zone.hosts,
        vpcs=tuple(merged),
    )
    return out, tuple(messages)
