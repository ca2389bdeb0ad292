"""Deterministic address allocation. Pure: the inventory in, an address out.

Rules (README "Addressing"):

* host mesh addresses: the lowest free host address of the mesh CIDR;
* VPC slices: the lowest free ``/slice_prefix`` block of the VPC CIDR that does not overlap the
  VPC's service range (by default the *last* block of that size);
* container addresses: the lowest free address of the host's slice after the gateway (the first
  usable address of a slice is the gateway on the host's VPC bridge), in the slice's lower half:
  the upper half is Docker's own allocation range (``docker_range``), so declared containers and
  containers Docker numbers never collide;
* service VIPs: the lowest free usable address of the VPC's service range.

Every allocation is written into the inventory and never renumbered: removing an object frees its
address for a later allocation but does not move anything else. An explicit address is honoured
when it is free and in range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network

from vpcctl.core.errors import AllocationError
from vpcctl.core.model import Inventory, docker_range, gateway


def default_service_range(cidr: IPv4Network, slice_prefix: int) -> IPv4Network:
    """The last ``/slice_prefix`` block of the VPC CIDR, e.g. 10.100.255.0/24 for 10.100.0.0/16."""
    if slice_prefix <= cidr.prefixlen:
        raise AllocationError(
            f"VPC CIDR {cidr} has no room for /{slice_prefix} slices and a service range",
            f"use a larger VPC CIDR (at most /{slice_prefix - 1}) or a longer --slice-prefix",
        )
    size = 1 << (32 - slice_prefix)
    last = int(cidr.broadcast_address) + 1 - size
    return IPv4Network((last, slice_prefix))


def _first_free(start: int, end: int, used: set[int]) -> int | None:
    for candidate in range(start, end + 1):
        if candidate not in used:
            return candidate
    return None


Refusal = Callable[[], AllocationError]


def _pick(
    wanted: IPv4Address | None,
    first: int,
    last: int,
    used: set[int],
    *,
    outside: Refusal,
    taken: Refusal,
    full: Refusal,
) -> IPv4Address:
    """``wanted`` if it is in ``first..last`` and not ``used``, else the first free address
    there; the refusals say why not (in the words of what is allocated)."""
    if wanted is not None:
        if not first <= int(wanted) <= last:
            raise outside()
        if int(wanted) in used:
            raise taken()
        return wanted
    found = _first_free(first, last, used)
    if found is None:
        raise full()
    return IPv4Address(found)


def _mesh_owners(inv: Inventory) -> dict[int, str]:
    """Mesh addresses in use: hosts' and roaming clients' (they share the mesh CIDR)."""
    owners = {int(h.address): f"host {h.name}" for h in inv.hosts.values()}
    owners.update({int(c.address): f"client {c.name}" for c in inv.clients.values()})
    return owners


def host_address(inv: Inventory, wanted: IPv4Address | None = None) -> IPv4Address:
    cidr = inv.mesh.cidr
    owners = _mesh_owners(inv)
    first, last = int(cidr.network_address) + 1, int(cidr.broadcast_address) - 1
    clients = f", {len(inv.clients)} clients" if inv.clients else ""
    return _pick(
        wanted, first, last, set(owners),
        outside=lambda: AllocationError(
            f"address {wanted} is not a usable address of the mesh CIDR {cidr}",
            f"pick an address between {IPv4Address(first)} and {IPv4Address(last)}",
        ),
        taken=lambda: AllocationError(
            f"address {wanted} is already used by {owners[int(wanted or 0)]}",
            "pick another address, or leave --address out to allocate one",
        ),
        full=lambda: AllocationError(
            f"the mesh CIDR {cidr} is full ({len(inv.hosts)} hosts{clients})",
            "a larger mesh CIDR needs a new mesh (`vpcctl init` with a larger --mesh-cidr)",
        ),
    )  # fmt: skip


def client_address(inv: Inventory) -> IPv4Address:
    """A roaming client's mesh address: the *highest* free one of the mesh CIDR (hosts take the
    lowest), so clients and hosts grow towards each other and never collide, and no client
    address can ever lie in a VPC (the mesh CIDR overlaps no VPC)."""
    cidr = inv.mesh.cidr
    used = _mesh_owners(inv)
    for candidate in range(int(cidr.broadcast_address) - 1, int(cidr.network_address), -1):
        if candidate not in used:
            return IPv4Address(candidate)
    raise AllocationError(
        f"the mesh CIDR {cidr} is full ({len(used)} hosts and clients)",
        "remove unused clients (`vpcctl client rm`), or start a mesh with a larger --mesh-cidr",
    )


def vpc_slice(
    inv: Inventory, vpc: str, taken: Iterable[IPv4Network] = (), wanted: IPv4Network | None = None
) -> IPv4Network:
    """A free slice of VPC ``vpc`` (``taken`` adds slices allocated in the same operation)."""
    v = inv.vpcs[vpc]
    used = {s for h in inv.hosts.values() if (s := h.slices.get(vpc)) is not None}
    used.update(taken)
    if wanted is not None:
        if not wanted.subnet_of(v.cidr) or wanted.overlaps(v.services):
            raise AllocationError(
                f"slice {wanted} is not inside VPC {vpc} ({v.cidr}) outside its service range",
                f"the service range is {v.services}",
            )
        if any(wanted.overlaps(s) for s in used):
            raise AllocationError(
                f"slice {wanted} of VPC {vpc} is already used", "pick another one"
            )
        return wanted
    size = 1 << (32 - v.slice_prefix)
    used_starts = {int(s.network_address) for s in used}
    start, end = int(v.cidr.network_address), int(v.cidr.broadcast_address)
    svc_lo, svc_hi = int(v.services.network_address), int(v.services.broadcast_address)
    for base in range(start, end + 1, size):
        if base in used_starts or (base <= svc_hi and base + size - 1 >= svc_lo):
            continue
        return IPv4Network((base, v.slice_prefix))
    raise AllocationError(
        f"VPC {vpc} ({v.cidr}) has no free /{v.slice_prefix} slice left for another host",
        "VPC CIDRs cannot grow in place: create a larger VPC, or remove hosts",
    )


def container_ip(
    inv: Inventory, vpc: str, host: str, wanted: IPv4Address | None = None
) -> IPv4Address:
    slice_ = inv.hosts[host].slices.get(vpc)
    if slice_ is None:
        raise AllocationError(
            f"host {host} has no slice in VPC {vpc}", "run `vpcctl check` and fix the inventory"
        )
    used = {int(c.ip) for c in inv.containers.values() if c.vpc == vpc}
    first = int(gateway(slice_).ip) + 1
    last = int(slice_.broadcast_address) - 1
    docker = docker_range(slice_)
    if docker is not None:
        last = int(docker.network_address) - 1
    docker_note = f"; {docker} is Docker's range" if docker is not None else ""
    return _pick(
        wanted, first, last, used,
        outside=lambda: AllocationError(
            f"{wanted} is not a container address of host {host}'s slice {slice_} in VPC {vpc}",
            f"pick an address from {IPv4Address(first)} to {IPv4Address(last)} "
            f"({gateway(slice_).ip} is the gateway{docker_note})",
        ),
        taken=lambda: AllocationError(
            f"{wanted} is already used in VPC {vpc}",
            "pick another address, or leave --ip out to allocate one",
        ),
        full=lambda: AllocationError(
            f"host {host}'s slice {slice_} of VPC {vpc} is full"
            + (f" (its upper half {docker} is Docker's range)" if docker is not None else ""),
            "remove containers from that host, or place this one on another host",
        ),
    )  # fmt: skip


def service_vip(inv: Inventory, vpc: str, wanted: IPv4Address | None = None) -> IPv4Address:
    rng = inv.vpcs[vpc].services
    used = {int(s.vip) for s in inv.services.values() if s.vpc == vpc}
    first, last = int(rng.network_address) + 1, int(rng.broadcast_address) - 1
    return _pick(
        wanted, first, last, used,
        outside=lambda: AllocationError(
            f"VIP {wanted} is outside VPC {vpc}'s service range {rng}",
            f"pick an address from {IPv4Address(first)} to {IPv4Address(last)}",
        ),
        taken=lambda: AllocationError(
            f"VIP {wanted} is already used in VPC {vpc}", "pick another one"
        ),
        full=lambda: AllocationError(
            f"the service range {rng} of VPC {vpc} is full", "remove unused services"
        ),
    )  # fmt: skip
