"""plan() and the agent's apply/rollback against a fake kernel (pure + in-memory).

The ipip routing mode cannot run on this machine's kernel (no ipip module): its exact planned
operations are asserted here; the VM stage runs it for real."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from tests.builders import empty
from tests.fakes import FakeSystem
from vpcctl.admin import edits
from vpcctl.admin.render import render
from vpcctl.core.errors import ApplyError, KernelError
from vpcctl.core.keys import PrivateKey
from vpcctl.core.model import Inventory, SshTarget, parse_portspec
from vpcctl.host.agent import apply, down, keygen
from vpcctl.host.changes import (
    AddAddress,
    AddRoute,
    CreateBridge,
    CreateTunnel,
    CreateWireGuard,
    DeleteLink,
    LoadFirewall,
    RemovePeer,
    SetLink,
    SetListenPort,
    SetPeer,
    SetPrivateKey,
    WriteZone,
)
from vpcctl.host.linktypes import Route
from vpcctl.host.state import StateDir


def _inv(routing: str = "ipip", hosts: int = 3, keys: dict[str, str] | None = None) -> Inventory:
    inv = empty(routing=routing)
    for i in range(1, hosts + 1):
        name = f"h{i}"
        pub = (keys or {}).get(name) or PrivateKey.generate().public_key()
        inv = edits.add_host(
            inv,
            name,
            SshTarget(f"192.0.2.{i}"),
            endpoint=f"192.0.2.{i}:51820" if i > 1 else None,
            public_key=pub,
        )
    inv = edits.add_vpc(inv, "prod", IPv4Network("10.100.0.0/16"))
    inv = edits.add_vpc(inv, "dev", IPv4Network("10.101.0.0/16"))
    inv = edits.add_container(inv, "db-1", "prod", "h2")
    inv = edits.add_container(inv, "db-2", "prod", "h3")
    inv = edits.add_service(inv, "db", "prod", (parse_portspec("pg=5432", "t"),), ("db-1", "db-2"))
    return inv


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir(tmp_path / "state")
    keygen(s)
    return s


def _keyed(state: StateDir, routing: str = "ipip", hosts: int = 3) -> Inventory:
    public, _ = keygen(state)
    return _inv(routing, hosts, {"h1": public})


def _with_h9(inv: Inventory, endpoint: str) -> Inventory:
    """``inv`` plus a host h9 (SSH 192.0.2.9) at ``endpoint`` with a fresh key."""
    return edits.add_host(
        inv, "h9", SshTarget("192.0.2.9"), endpoint=endpoint,
        public_key=PrivateKey.generate().public_key(),
    )  # fmt: skip


def test_ipip_plan_is_exactly_the_expected_netlink_operations(state: StateDir) -> None:
    inv = _keyed(state)
    spec = render(inv, "h1")
    sysm = FakeSystem(backend="kernel")
    result = apply(spec, sysm, state, dry_run=True)
    ops_ = [type(c).__name__ for c in result.plan.changes]
    assert ops_ == [
        "SetForwarding",
        "CreateWireGuard", "SetPrivateKey", "SetListenPort", "SetLink", "AddAddress",
        "SetPeer", "SetPeer",
        "CreateTunnel", "SetLink",
        "CreateBridge", "SetLink", "AddAddress",  # prod/dev sorted: dev first
        "CreateBridge", "SetLink", "AddAddress",
        "AddRoute", "AddRoute", "AddRoute", "AddRoute",
        "LoadFirewall", "WriteZone", "StartResolver",
    ]  # fmt: skip
    c = result.plan.changes
    assert c[1] == CreateWireGuard("vpc0", "kernel", 1420, "vpcctl:home")
    assert isinstance(c[2], SetPrivateKey) and c[2].public_key == spec.public_key
    assert c[3] == SetListenPort("vpc0", 51820)
    assert c[5] == AddAddress("vpc0", IPv4Interface("10.90.0.1/24"))
    peers = [x for x in c if isinstance(x, SetPeer)]
    assert [(p.name, p.endpoint, p.keepalive) for p in peers] == [
        ("h2", "192.0.2.2:51820", 25),  # h1 is behind NAT: it keeps the tunnels alive
        ("h3", "192.0.2.3:51820", 25),
    ]
    assert peers[0].allowed_ips == (IPv4Network("10.90.0.2/32"),)  # ipip: mesh /32 only
    assert c[8] == CreateTunnel("vpc0-ipip", IPv4Address("10.90.0.1"), 1400, "vpcctl:home")
    bridges = [x for x in c if isinstance(x, CreateBridge)]
    assert bridges == [
        CreateBridge("vb-dev", 1400, "vpcctl:home"),
        CreateBridge("vb-prod", 1400, "vpcctl:home"),
    ]
    routes = [x.route for x in c if isinstance(x, AddRoute)]
    h2, h3 = inv.hosts["h2"], inv.hosts["h3"]
    assert set(routes) == {
        Route(h.slices[v], "vpc0-ipip", h.address, True, 211)
        for h in (h2, h3)
        for v in ("prod", "dev")
    }
    assert isinstance(c[-3], LoadFirewall) and isinstance(c[-2], WriteZone)
    argv = c[-1].argv  # type: ignore[attr-defined]
    assert argv[1:5] == ("-m", "vpcctl", "dns", "serve")
    listen = [argv[i + 1] for i, a in enumerate(argv) if a == "--listen"]
    assert listen == [str(v.gateway.ip) for v in spec.vpcs] + ["127.0.0.1"]


def test_wireguard_mode_puts_slices_in_allowed_ips_and_routes_on_wg(state: StateDir) -> None:
    inv = _keyed(state, routing="wireguard")
    result = apply(render(inv, "h1"), FakeSystem(), state, dry_run=True)
    c = result.plan.changes
    assert not any(isinstance(x, CreateTunnel) for x in c)
    peer = next(x for x in c if isinstance(x, SetPeer) and x.name == "h2")
    assert set(peer.allowed_ips) == {IPv4Network("10.90.0.2/32"), *inv.hosts["h2"].slices.values()}
    routes = [x.route for x in c if isinstance(x, AddRoute)]
    assert all(r.dev == "vpc0" and r.via is None and r.proto == 211 for r in routes)
    assert next(x for x in c if isinstance(x, CreateWireGuard)).backend == "userspace"


def test_second_apply_plans_nothing_and_changes_nothing(state: StateDir) -> None:
    spec = render(_keyed(state), "h1")
    sysm = FakeSystem(backend="kernel")
    first = apply(spec, sysm, state)
    assert first.applied == len(first.plan.changes) > 0
    before, calls = sysm.snapshot(), len(sysm.calls)
    second = apply(spec, sysm, state)
    assert second.plan.empty and second.applied == 0
    assert sysm.snapshot() == before and len(sysm.calls) == calls


def test_adding_a_host_only_adds_a_peer_and_its_routes(state: StateDir) -> None:
    inv = _keyed(state)
    sysm = FakeSystem(backend="kernel")
    apply(render(inv, "h1"), sysm, state)
    inv4 = edits.add_host(
        inv,
        "h4",
        SshTarget("192.0.2.4"),
        endpoint="192.0.2.4:51820",
        public_key=PrivateKey.generate().public_key(),
    )
    p = apply(render(inv4, "h1"), sysm, state, dry_run=True).plan
    kinds = {type(c).__name__ for c in p.changes}
    assert kinds == {"SetPeer", "AddRoute", "WriteZone"}  # the resolver reloads the zone itself
    assert [c.name for c in p.changes if isinstance(c, SetPeer)] == ["h4"]


def test_removed_host_is_removed_as_a_peer_only(state: StateDir) -> None:
    inv = _keyed(state)
    sysm = FakeSystem(backend="kernel")
    apply(render(inv, "h1"), sysm, state)
    gone = inv.hosts["h3"].public_key
    inv2 = edits.rm_host(inv, "h3", force=True)
    p = apply(render(inv2, "h1"), sysm, state).plan
    assert RemovePeer("vpc0", gone) in p.changes  # type: ignore[arg-type]
    assert not any(isinstance(c, CreateWireGuard | DeleteLink) for c in p.changes)
    assert apply(render(inv2, "h1"), sysm, state).plan.empty


def test_foreign_link_with_a_wanted_name_is_a_conflict_and_nothing_changes(state: StateDir) -> None:
    sysm = FakeSystem()
    sysm.add_foreign_link("vb-prod", "bridge")
    before = sysm.snapshot()
    with pytest.raises(ApplyError, match="not owned by vpcctl"):
        apply(render(_keyed(state), "h1"), sysm, state)
    assert sysm.snapshot() == before and sysm.calls == []


def test_foreign_links_and_routes_are_left_alone(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    sysm.add_foreign_link("eth0", None)
    sysm.add_foreign_link("docker0", "bridge")
    foreign = Route(IPv4Network("10.100.9.0/24"), "eth0", IPv4Address("192.0.2.254"), False, 0)
    sysm.routes_.append(foreign)
    inv = _keyed(state)
    apply(render(inv, "h1"), sysm, state)
    down(sysm, state)
    assert set(sysm.links_) == {"eth0", "docker0"}
    assert sysm.routes_ == [foreign]
    assert sysm.nft is None


def test_a_removed_vpc_removes_its_bridge_and_routes(state: StateDir) -> None:
    inv = _keyed(state)
    sysm = FakeSystem(backend="kernel")
    apply(render(inv, "h1"), sysm, state)
    dev = inv.vpcs["dev"].cidr
    assert any(r.dst.subnet_of(dev) for r in sysm.routes_)  # so that the check below can fail
    inv2 = edits.rm_vpc(inv, "dev")
    p = apply(render(inv2, "h1"), sysm, state).plan
    assert DeleteLink("vb-dev", "bridge") in p.changes
    assert "vb-dev" not in sysm.links_
    assert not any(r.dst.subnet_of(dev) for r in sysm.routes_), sysm.routes_
    assert apply(render(inv2, "h1"), sysm, state).plan.empty


def test_switching_routing_mode_removes_the_tunnel(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    apply(render(_keyed(state, "ipip"), "h1"), sysm, state)
    assert "vpc0-ipip" in sysm.links_
    public = keygen(state)[0]
    inv = _inv("wireguard", 3, {"h1": public})
    apply(render(inv, "h1"), sysm, state)
    assert "vpc0-ipip" not in sysm.links_
    assert all(r.dev == "vpc0" for r in sysm.routes())


@pytest.mark.parametrize("step", ["add_ipip", "add_route", "wg_remove_peer", "wg_set_peer"])
def test_failure_mid_apply_restores_the_previous_state(state: StateDir, step: str) -> None:
    sysm = FakeSystem(backend="kernel")
    public = keygen(state)[0]
    inv_a = _inv("wireguard", 3, {"h1": public})
    apply(render(inv_a, "h1"), sysm, state)
    good = sysm.snapshot()
    inv_b = _with_h9(_inv("ipip", 3, {"h1": public}), "192.0.2.9:51820")
    sysm.fail_on[step] = f"{step} exploded"
    with pytest.raises(ApplyError) as info:
        apply(render(inv_b, "h1"), sysm, state)
    assert f"{step} exploded" in info.value.message
    assert "restored the previously applied state" in info.value.message
    after = sysm.snapshot()
    assert after[0].keys() == good[0].keys()  # type: ignore[attr-defined]
    assert after[1:] == good[1:]
    assert apply(render(inv_a, "h1"), sysm, state, dry_run=True).plan.empty


def test_failed_first_apply_removes_everything_it_created(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    sysm.add_foreign_link("eth0", None)
    before = sysm.snapshot()
    sysm.fail_on["nft_load"] = "no nf_tables"
    with pytest.raises(ApplyError, match="restored the state before vpcctl"):
        apply(render(_keyed(state), "h1"), sysm, state)
    assert sysm.snapshot()[:3] == before[:3]


def test_wrong_key_for_this_host_is_refused(state: StateDir) -> None:
    inv = _inv()  # h1 has some other key
    with pytest.raises(ApplyError, match="not the one the inventory has"):
        apply(render(inv, "h1"), FakeSystem(), state)


def test_changed_mtu_and_missing_address_are_repaired_in_place(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    spec = render(_keyed(state), "h1")
    apply(spec, sysm, state)
    sysm.set_link("vb-prod", mtu=9000)
    sysm.del_address("vb-prod", spec.vpcs[1].gateway)
    p = apply(spec, sysm, state).plan
    assert p.changes == (
        SetLink("vb-prod", mtu=1400),
        AddAddress("vb-prod", spec.vpcs[1].gateway),
    )


def test_a_rollback_that_fails_too_says_so(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    public = keygen(state)[0]
    apply(render(_inv("wireguard", 3, {"h1": public}), "h1"), sysm, state)
    sysm.fail_always["wg_remove_peer"] = "device gone"
    with pytest.raises(ApplyError, match="rollback to the previously applied state also failed"):
        apply(render(_inv("wireguard", 3, {"h1": public}), "h1"), sysm, state)


def test_a_foreign_route_to_a_slice_is_a_conflict(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    sysm.add_foreign_link("eth0", None)
    inv = _keyed(state)
    slice_ = inv.hosts["h2"].slices["prod"]
    sysm.routes_.append(Route(slice_, "eth0", IPv4Address("192.0.2.254"), False, 4))
    with pytest.raises(ApplyError, match="vpcctl does not own"):
        apply(render(inv, "h1"), sysm, state)
    assert sysm.calls == []


def test_a_kernel_refusal_mid_apply_is_rolled_back_too(state: StateDir) -> None:
    """Not an injected failure: the fake kernel refuses like the real one (no ipip module), with
    a KernelError, and apply restores the previous state and passes the kernel's hint on."""
    sysm = FakeSystem(backend="kernel", ipip=False)
    public = keygen(state)[0]
    inv_a = _inv("wireguard", 3, {"h1": public})
    apply(render(inv_a, "h1"), sysm, state)
    good = sysm.snapshot()
    with pytest.raises(ApplyError) as info:
        apply(render(_inv("ipip", 3, {"h1": public}), "h1"), sysm, state)
    assert "Operation not supported" in info.value.message
    assert "restored the previously applied state" in info.value.message
    assert info.value.hint is not None and "ipip" in info.value.hint
    assert sysm.snapshot()[1:] == good[1:]
    assert sysm.snapshot()[0].keys() == good[0].keys()  # type: ignore[attr-defined]
    assert apply(render(inv_a, "h1"), sysm, state, dry_run=True).plan.empty


def test_an_endpoint_name_is_resolved_and_an_unknown_one_refused(state: StateDir) -> None:
    public = keygen(state)[0]
    inv = _with_h9(_inv("wireguard", 3, {"h1": public}), "peer.example:51820")
    sysm = FakeSystem(backend="kernel", names={"peer.example": "192.0.2.9"})
    apply(render(inv, "h1"), sysm, state)
    peers = sysm.wg_["vpc0"]["peers"]
    assert isinstance(peers, dict)
    assert {p.endpoint for p in peers.values()} >= {"192.0.2.9:51820"}
    unresolved = FakeSystem(backend="kernel")
    with pytest.raises(KernelError, match=r"cannot resolve endpoint peer\.example:51820") as info:
        apply(render(inv, "h1"), unresolved, state)
    assert info.value.hint == "check the name or use an IP address"
    assert unresolved.calls == []  # refused while observing, before any change


class FullDisk(StateDir):
    """A state directory on a full disk: writing any of ``full`` fails with ENOSPC."""

    full: tuple[str, ...] = ()

    def write(self, path: Path, text: str) -> None:
        if path.name in self.full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        super().write(path, text)


def _full(state: StateDir, *names: str) -> FullDisk:
    disk = FullDisk(state.path)
    object.__setattr__(disk, "full", names)
    return disk


@pytest.mark.parametrize("name", ["zone.json", "firewall.json", "applied.json"])
def test_a_full_disk_on_a_first_apply_removes_everything_it_created(
    state: StateDir, name: str
) -> None:
    sysm = FakeSystem(backend="kernel")
    sysm.add_foreign_link("eth0", None)
    before = sysm.snapshot()
    with pytest.raises(ApplyError) as info:
        apply(render(_keyed(state), "h1"), sysm, _full(state, name))
    assert f"{state.path / name}: No space left on device" in info.value.message
    assert "restored the state before vpcctl" in info.value.message
    assert (
        info.value.hint and "free space" in info.value.hint and str(state.path) in info.value.hint
    )
    assert sysm.snapshot()[:3] == before[:3]
    assert not state.applied.exists() and not state.fingerprint.exists()
    assert not list(state.path.glob(".*.tmp"))


def test_a_full_disk_on_a_later_apply_restores_the_previous_state(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    public = keygen(state)[0]
    inv_a = _inv("wireguard", 3, {"h1": public})
    apply(render(inv_a, "h1"), sysm, state)
    good = sysm.snapshot()
    applied = state.applied.read_text()
    inv_b = edits.add_vpc(inv_a, "test", IPv4Network("10.102.0.0/16"))
    with pytest.raises(ApplyError, match="restored the previously applied state"):
        apply(render(inv_b, "h1"), sysm, _full(state, "applied.json"))
    assert sysm.snapshot()[1:] == good[1:]
    assert state.applied.read_text() == applied
    assert apply(render(inv_a, "h1"), sysm, state, dry_run=True).plan.empty


def test_any_exception_mid_apply_rolls_back_too(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    before = sysm.snapshot()

    def boom(*args: object) -> None:
        raise RuntimeError("surprise")

    sysm.add_bridge = boom  # type: ignore[method-assign,assignment]
    with pytest.raises(ApplyError) as info:
        apply(render(_keyed(state), "h1"), sysm, state)
    assert "RuntimeError: surprise" in info.value.message
    assert "restored the state before vpcctl" in info.value.message
    assert sysm.snapshot()[:3] == before[:3]
