"""Address allocation: lowest free, never renumbers, explicit addresses honoured or refused,
exhaustion is a clear AllocationError. Unit tests, then a state machine of random operations."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.builders import empty, homelab, ip, public_key
from vpcctl.admin import allocate, edits, inventory
from vpcctl.core.errors import AllocationError, NotFoundError, ValidationError
from vpcctl.core.model import Inventory, PortSpec, SshTarget, docker_range

NET = IPv4Network
SSH = SshTarget("h")
PORTS = (PortSpec(80),)


def test_homelab_addresses() -> None:
    inv = homelab()
    assert [str(inv.hosts[h].address) for h in ("nas", "vps1", "vps2")] == [
        "10.90.0.1",
        "10.90.0.2",
        "10.90.0.3",
    ]
    assert inv.vpcs["prod"].services == NET("10.100.255.0/24")
    assert [str(inv.hosts[h].slices["prod"]) for h in ("nas", "vps1", "vps2")] == [
        "10.100.0.0/24",
        "10.100.1.0/24",
        "10.100.2.0/24",
    ]
    # .1 is the gateway on the VPC bridge: the first container gets .2
    assert inv.containers["prod/web-1"].ip == ip("10.100.0.2")
    assert inv.services["prod/db"].vip == ip("10.100.255.1")


def test_default_service_range_is_the_last_block() -> None:
    assert allocate.default_service_range(NET("10.100.0.0/16"), 24) == NET("10.100.255.0/24")
    assert allocate.default_service_range(NET("10.0.0.0/26"), 29) == NET("10.0.0.56/29")
    with pytest.raises(AllocationError):
        allocate.default_service_range(NET("10.0.0.0/24"), 24)


def test_removal_frees_an_address_without_moving_anything() -> None:
    inv = homelab()
    before = {n: h.address for n, h in inv.hosts.items() if n != "vps1"}
    inv = edits.rm_host(inv, "vps1", force=True)
    assert {n: h.address for n, h in inv.hosts.items()} == before
    inv = edits.add_host(inv, "vps3", SSH)
    assert inv.hosts["vps3"].address == ip("10.90.0.2")  # the hole is reused
    assert inv.hosts["vps3"].slices["prod"] == NET("10.100.1.0/24")
    assert {n: h.address for n, h in inv.hosts.items() if n != "vps3"} == before


def test_explicit_host_address() -> None:
    inv = homelab()
    inv = edits.add_host(inv, "vps3", SSH, address=ip("10.90.0.200"))
    assert inv.hosts["vps3"].address == ip("10.90.0.200")
    with pytest.raises(AllocationError, match="already used by host vps3"):
        edits.add_host(inv, "vps4", SSH, address=ip("10.90.0.200"))
    for bad in ("10.90.0.0", "10.90.0.255", "10.91.0.1"):
        with pytest.raises(AllocationError, match="not a usable address") as info:
            edits.add_host(inv, "vps4", SSH, address=ip(bad))
        assert info.value.hint == "pick an address between 10.90.0.1 and 10.90.0.254"


def test_explicit_container_ip() -> None:
    inv = homelab()
    inv = edits.add_container(inv, "api-1", "prod", "nas", ip("10.100.0.77"))
    assert inv.containers["prod/api-1"].ip == ip("10.100.0.77")
    with pytest.raises(AllocationError, match="already used in VPC prod"):
        edits.add_container(inv, "api-2", "prod", "nas", ip("10.100.0.77"))
    for bad in ("10.100.0.1", "10.100.0.0", "10.100.0.255", "10.100.1.5"):
        with pytest.raises(AllocationError, match="not a container address"):
            edits.add_container(inv, "api-2", "prod", "nas", ip(bad))


def test_declared_containers_stay_out_of_dockers_half_of_the_slice() -> None:
    inv = homelab()
    s = inv.hosts["nas"].slices["prod"]
    assert docker_range(s) == NET(f"{s.network_address + 128}/25")
    with pytest.raises(AllocationError, match="not a container address") as info:
        edits.add_container(inv, "api-2", "prod", "nas", s.network_address + 128)
    assert "is Docker's range" in (info.value.hint or "")
    inv = edits.add_container(inv, "api-2", "prod", "nas", s.network_address + 127)
    assert inv.containers["prod/api-2"].ip == s.network_address + 127
    for prefix, want in ((24, "0.128/25"), (16, "128.0/17"), (29, "0.4/30"), (30, None)):
        got = docker_range(NET(f"10.0.0.0/{prefix}"))
        assert got == (NET(f"10.0.{want}") if want else None), prefix


def test_explicit_vip() -> None:
    inv = homelab()
    inv = edits.add_service(inv, "web", "prod", PORTS, ("web-1",), ip("10.100.255.80"))
    assert inv.services["prod/web"].vip == ip("10.100.255.80")
    with pytest.raises(AllocationError, match="already used"):
        edits.add_service(inv, "api", "prod", PORTS, (), ip("10.100.255.80"))
    with pytest.raises(AllocationError, match="outside VPC prod's service range"):
        edits.add_service(inv, "api", "prod", PORTS, (), ip("10.100.0.9"))


def test_explicit_slice() -> None:
    inv = homelab()
    assert allocate.vpc_slice(inv, "prod", wanted=NET("10.100.9.0/24")) == NET("10.100.9.0/24")
    with pytest.raises(AllocationError, match="already used"):
        allocate.vpc_slice(inv, "prod", wanted=NET("10.100.1.0/24"))
    with pytest.raises(AllocationError, match="not inside VPC prod"):
        allocate.vpc_slice(inv, "prod", wanted=NET("10.100.255.0/24"))


def test_exhaustion_is_a_clear_allocation_error() -> None:
    inv = empty(mesh_cidr="10.90.0.0/29")  # 6 usable host addresses
    for i in range(6):
        inv = edits.add_host(inv, f"h{i}", SSH)
    with pytest.raises(AllocationError) as info:
        edits.add_host(inv, "h6", SSH)
    assert info.value.message == "the mesh CIDR 10.90.0.0/29 is full (6 hosts)"
    assert info.value.hint

    inv = empty()
    inv = edits.add_vpc(inv, "tiny", NET("10.100.0.0/27"), slice_prefix=29)  # 3 slices + services
    for i in range(3):
        inv = edits.add_host(inv, f"h{i}", SSH)
    with pytest.raises(AllocationError, match="no free /29 slice left"):
        edits.add_host(inv, "h3", SSH)
    # a /29 slice: network, gateway, 2 declared containers; the upper half is Docker's
    for i in range(2):
        inv = edits.add_container(inv, f"c{i}", "tiny", "h0")
    assert inv.containers["tiny/c1"].ip == ip("10.100.0.3")
    with pytest.raises(AllocationError, match=r"h0's slice 10\.100\.0\.0/29 of VPC tiny is full"):
        edits.add_container(inv, "c2", "tiny", "h0")
    for i in range(6):
        inv = edits.add_service(inv, f"s{i}", "tiny", PORTS, ())
    with pytest.raises(
        AllocationError, match=r"service range 10\.100\.0\.24/29 of VPC tiny is full"
    ):
        edits.add_service(inv, "s6", "tiny", PORTS, ())

    # a VPC too small for the hosts that already exist
    with pytest.raises(AllocationError, match="no free /30 slice"):
        edits.add_vpc(inv, "small", NET("10.101.0.0/29"), slice_prefix=30)


# ---------------------------------------------------------------------------------------------
# random sequences of operations


@dataclass(frozen=True)
class Snapshot:
    hosts: dict[str, IPv4Address]
    slices: dict[tuple[str, str], IPv4Network]
    containers: dict[str, IPv4Address]
    services: dict[str, IPv4Address]

    @classmethod
    def of(cls, inv: Inventory) -> Snapshot:
        return cls(
            hosts={n: h.address for n, h in inv.hosts.items()},
            slices={(n, v): s for n, h in inv.hosts.items() for v, s in h.slices.items()},
            containers={k: c.ip for k, c in inv.containers.items()},
            services={k: s.vip for k, s in inv.services.items()},
        )


def _kept(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    """Every object that survived an operation kept its address."""
    for key, value in after.items():
        if key in before:
            assert before[key] == value, f"{key} renumbered: {before[key]} -> {value}"


HOST_NAMES = [f"h{i}" for i in range(9)]
VPC_CIDRS = {"a": NET("10.100.0.0/26"), "b": NET("10.101.0.0/27"), "c": NET("10.102.0.0/28")}
NAMES = [f"n{i}" for i in range(8)]


class Allocation(RuleBasedStateMachine):
    """Small CIDRs (a /28 mesh, /29 and /30 slices) so that every range runs out."""

    def __init__(self) -> None:
        super().__init__()
        self.inv = empty(mesh_cidr="10.90.0.0/28")

    def apply(self, change, expected_ok: bool | None = None) -> bool:  # type: ignore[no-untyped-def]
        before = self.inv
        try:
            after = change(before)
        except (AllocationError, ValidationError, NotFoundError) as exc:
            assert exc.hint, exc.message
            assert expected_ok is not True, f"refused: {exc.message}"
            return False
        assert expected_ok is not False, "accepted what should be refused"
        old, new = Snapshot.of(before), Snapshot.of(after)
        _kept(old.hosts, new.hosts)
        _kept(old.slices, new.slices)
        _kept(old.containers, new.containers)
        _kept(old.services, new.services)
        self.inv = after
        return True

    @rule(name=st.sampled_from(HOST_NAMES), offset=st.none() | st.integers(0, 15))
    def add_host(self, name: str, offset: int | None) -> None:
        wanted = None if offset is None else IPv4Address(int(self.inv.mesh.cidr[0]) + offset)
        inv = self.inv
        expect = None
        if wanted is not None and name not in inv.hosts:
            usable = 1 <= offset <= 14  # type: ignore[operator]
            taken = wanted in [h.address for h in inv.hosts.values()]
            if not usable or taken:
                expect = False
        ok = self.apply(
            lambda i: edits.add_host(i, name, SSH, public_key=public_key(name), address=wanted),
            expect,
        )
        if ok and wanted is not None:
            assert self.inv.hosts[name].address == wanted

    @rule(name=st.sampled_from(HOST_NAMES), force=st.booleans())
    def rm_host(self, name: str, force: bool) -> None:
        self.apply(lambda i: edits.rm_host(i, name, force=force))

    @rule(name=st.sampled_from(sorted(VPC_CIDRS)), prefix=st.sampled_from([29, 30]))
    def add_vpc(self, name: str, prefix: int) -> None:
        self.apply(lambda i: edits.add_vpc(i, name, VPC_CIDRS[name], slice_prefix=prefix))

    @rule(name=st.sampled_from(sorted(VPC_CIDRS)), force=st.booleans())
    def rm_vpc(self, name: str, force: bool) -> None:
        self.apply(lambda i: edits.rm_vpc(i, name, force=force))

    @precondition(lambda self: self.inv.vpcs and self.inv.hosts)
    @rule(data=st.data(), name=st.sampled_from(NAMES), offset=st.none() | st.integers(0, 7))
    def add_container(self, data: st.DataObject, name: str, offset: int | None) -> None:
        vpc = data.draw(st.sampled_from(sorted(self.inv.vpcs)))
        host = data.draw(st.sampled_from(sorted(self.inv.hosts)))
        slice_ = self.inv.hosts[host].slices[vpc]
        wanted = None if offset is None else IPv4Address(int(slice_[0]) + offset)
        expect = None
        key = f"{vpc}/{name}"
        if wanted is not None and key not in self.inv.containers and key not in self.inv.services:
            docker = docker_range(slice_)  # the upper half is Docker's (None: /30, no split)
            top = slice_.num_addresses // 2 - 1 if docker else slice_.num_addresses - 2
            usable = 2 <= offset <= top  # type: ignore[operator]
            taken = wanted in [c.ip for c in self.inv.containers.values() if c.vpc == vpc]
            expect = usable and not taken
        ok = self.apply(lambda i: edits.add_container(i, name, vpc, host, wanted), expect)
        if ok:
            c = self.inv.containers[key]
            assert c.ip in slice_ and c.ip != slice_[1]
            docker = docker_range(slice_)
            assert docker is None or c.ip not in docker
            if wanted is not None:
                assert c.ip == wanted

    @precondition(lambda self: self.inv.containers)
    @rule(data=st.data(), force=st.booleans())
    def rm_container(self, data: st.DataObject, force: bool) -> None:
        c = self.inv.containers[data.draw(st.sampled_from(sorted(self.inv.containers)))]
        self.apply(lambda i: edits.rm_container(i, c.name, c.vpc, force=force))

    @precondition(lambda self: self.inv.vpcs)
    @rule(data=st.data(), name=st.sampled_from(NAMES), explicit=st.booleans())
    def add_service(self, data: st.DataObject, name: str, explicit: bool) -> None:
        vpc = data.draw(st.sampled_from(sorted(self.inv.vpcs)))
        members = sorted(c.name for c in self.inv.containers.values() if c.vpc == vpc)
        backends: tuple[str, ...] = ()
        if members:
            backends = tuple(data.draw(st.lists(st.sampled_from(members), unique=True, max_size=3)))
        rng = self.inv.vpcs[vpc].services
        wanted = data.draw(st.sampled_from(list(rng))) if explicit else None
        expect = None
        key = f"{vpc}/{name}"
        if wanted is not None and key not in self.inv.services and key not in self.inv.containers:
            usable = wanted not in (rng.network_address, rng.broadcast_address)
            taken = wanted in [s.vip for s in self.inv.services.values() if s.vpc == vpc]
            expect = usable and not taken
        ok = self.apply(lambda i: edits.add_service(i, name, vpc, PORTS, backends, wanted), expect)
        if ok and wanted is not None:
            assert self.inv.services[key].vip == wanted

    @precondition(lambda self: self.inv.services)
    @rule(data=st.data())
    def rm_service(self, data: st.DataObject) -> None:
        s = self.inv.services[data.draw(st.sampled_from(sorted(self.inv.services)))]
        self.apply(lambda i: edits.rm_service(i, s.name, s.vpc))

    @invariant()
    def valid_without_duplicates(self) -> None:
        inv = self.inv
        assert inventory.problems(inv) == []
        addresses = [h.address for h in inv.hosts.values()]
        assert len(addresses) == len(set(addresses))
        for vpc in inv.vpcs:
            ips = [c.ip for c in inv.containers.values() if c.vpc == vpc]
            assert len(ips) == len(set(ips))
            vips = [s.vip for s in inv.services.values() if s.vpc == vpc]
            assert len(vips) == len(set(vips))
            slices = [h.slices[vpc] for h in inv.hosts.values()]
            assert not any(a.overlaps(b) for i, a in enumerate(slices) for b in slices[i + 1 :]), (
                slices
            )

    @invariant()
    def round_trips_through_the_file(self) -> None:
        text = inventory.dump(self.inv)
        assert inventory.parse(text) == self.inv
        assert inventory.dump(inventory.parse(text)) == text


TestAllocation = Allocation.TestCase
TestAllocation.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
