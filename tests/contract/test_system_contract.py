"""One behaviour suite for the kernel port (vpcctl.host.kernel.System), run against the fake
(tests/fakes.py) and against the real LinuxSystem in fresh network and mount namespaces (root;
the ``linux`` cases carry the lab mark and its gate: under CI=true they fail if they cannot run).

Each ``case_*`` takes a System and a :class:`World` (how to make a foreign object, what the
kernel has) and asserts what the agent relies on: which creates are refused with KernelError,
which deletes are idempotent, how routes with vpcctl's protocol read back, that ``wg_get``
follows the link kind, nft load/list/delete, forwarding, endpoint resolution. A difference
between fake and kernel makes one side fail here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from tests.builders import private_key
from tests.contract.sandbox import run_in_sandbox
from tests.fakes import FakeSystem
from vpcctl.core.errors import KernelError
from vpcctl.host.firewall import TABLE_FAMILY, TABLE_NAME
from vpcctl.host.kernel import LinuxSystem, System
from vpcctl.host.linktypes import RTPROT_VPCCTL, Route
from vpcctl.host.netlink import HINT_IPIP
from vpcctl.host.wgtypes import PeerUpdate

ALIAS = "vpcctl:contract"
NET = IPv4Network
ADDR = IPv4Interface("10.77.0.1/24")


@dataclass
class World:
    """What a case may ask of the world around the System."""

    foreign: Callable[[str], None]  # create a bridge vpcctl does not own (no alias)
    ipip: bool | None  # does the kernel have ipip? None: unknown (the case accepts both)


def ours(system: System) -> list[Route]:
    system.links()  # the agent observes links first; routes are named after them
    return [r for r in system.routes() if r.proto == RTPROT_VPCCTL]


def refused(fn: Callable[[], object], says: str | None = None) -> KernelError:
    with pytest.raises(KernelError) as info:
        fn()
    if says is not None:
        assert says in f"{info.value.message} {info.value.hint}", info.value
    return info.value


# ---------------------------------------------------------------------------------------------
# the cases


def case_bridge_create_and_refuse_a_second(s: System, w: World) -> None:
    s.add_bridge("ct-br0", 1400, ALIAS)
    link = s.links()["ct-br0"]
    assert (link.kind, link.mtu, link.alias, link.up) == ("bridge", 1400, ALIAS, False)
    e = refused(lambda: s.add_bridge("ct-br0", 1400, ALIAS))
    assert "exists" in (e.hint or "")


def case_a_name_taken_by_a_foreign_link_is_refused(s: System, w: World) -> None:
    w.foreign("ct-x")
    refused(lambda: s.add_bridge("ct-x", 1400, ALIAS), "exists")
    refused(lambda: s.wg_create("ct-x", "userspace", 1420, ALIAS), "exists")
    link = s.links()["ct-x"]
    assert link.kind == "bridge" and link.alias is None  # untouched


def case_ipip_is_created_or_refused_with_the_module_hint(s: System, w: World) -> None:
    local = IPv4Address("192.0.2.1")
    try:
        s.add_ipip("ct-ip0", local, 1380, ALIAS)
    except KernelError as exc:
        assert w.ipip is not True, exc
        assert exc.hint == HINT_IPIP
        assert "ct-ip0" not in s.links()  # nothing half-created is left
        return
    assert w.ipip is not False
    link = s.links()["ct-ip0"]
    assert (link.kind, link.mtu, link.alias, link.ipip_local) == ("ipip", 1380, ALIAS, local)
    refused(lambda: s.add_ipip("ct-ip0", local, 1380, ALIAS))


def case_delete_link_is_idempotent(s: System, w: World) -> None:
    s.add_bridge("ct-br1", 1400, ALIAS)
    s.delete_link("ct-br1", "bridge")
    s.delete_link("ct-br1", "bridge")
    s.delete_link("ct-never", None)
    assert "ct-br1" not in s.links()


def case_a_missing_link_cannot_be_changed_or_addressed(s: System, w: World) -> None:
    refused(lambda: s.set_link("ct-none", mtu=1300), "no interface named ct-none")
    refused(lambda: s.add_address("ct-none", ADDR), "no interface named ct-none")
    s.del_address("ct-none", ADDR)  # already gone: not an error


def case_set_link_and_addresses(s: System, w: World) -> None:
    s.add_bridge("ct-br2", 1400, ALIAS)
    s.set_link("ct-br2", mtu=1300, up=True)
    link = s.links()["ct-br2"]
    assert link.mtu == 1300 and link.up
    s.add_address("ct-br2", ADDR)
    s.add_address("ct-br2", ADDR)  # again: not an error
    assert s.links()["ct-br2"].addresses == (ADDR,)
    s.del_address("ct-br2", ADDR)
    s.del_address("ct-br2", ADDR)
    assert s.links()["ct-br2"].addresses == ()


def case_routes_with_vpcctls_protocol(s: System, w: World) -> None:
    s.add_bridge("ct-br3", 1400, ALIAS)
    s.set_link("ct-br3", up=True)
    s.add_address("ct-br3", ADDR)
    direct = Route(NET("10.78.0.0/24"), "ct-br3", proto=RTPROT_VPCCTL)
    via = Route(NET("10.79.0.0/24"), "ct-br3", IPv4Address("10.77.0.9"), onlink=True,
                proto=RTPROT_VPCCTL)  # fmt: skip
    s.add_route(direct)
    s.add_route(via)
    s.add_route(direct)  # replace: still one route to the prefix
    assert ours(s) == [direct, via]
    moved = Route(NET("10.78.0.0/24"), "ct-br3", IPv4Address("10.77.0.7"), onlink=True,
                  proto=RTPROT_VPCCTL)  # fmt: skip
    s.add_route(moved)  # same prefix, new gateway: replaced, not added
    assert ours(s) == [moved, via]
    refused(lambda: s.add_route(Route(NET("10.80.0.0/24"), "ct-none", proto=RTPROT_VPCCTL)))
    s.del_route(moved)
    s.del_route(moved)  # absent: not an error
    s.del_route(Route(NET("10.80.0.0/24"), "ct-none", proto=RTPROT_VPCCTL))
    assert ours(s) == [via]
    s.delete_link("ct-br3", "bridge")
    assert ours(s) == []  # a link's routes go with it


def case_wg_get_follows_the_link_kind(s: System, w: World) -> None:
    s.add_bridge("ct-br4", 1400, ALIAS)
    assert s.wg_get("ct-br4", "bridge") is None
    assert s.wg_get("ct-br4", None) is None
    assert s.wg_get("ct-missing", "tun") is None
    refused(lambda: s.wg_set_device("ct-missing", listen_port=51999))
    s.wg_create("ct-wg0", "userspace", 1420, ALIAS)
    link = s.links()["ct-wg0"]
    assert (link.kind, link.mtu, link.alias) == ("tun", 1420, ALIAS)
    assert s.wg_get("ct-wg0", "bridge") is None
    dev = s.wg_get("ct-wg0", "tun")
    assert dev is not None and dev.backend == "userspace" and dev.public_key is None
    key = private_key("contract")
    s.wg_set_device("ct-wg0", private_key=key.raw, listen_port=51999)
    peer = private_key("contract-peer").public_key()
    s.wg_update_peer(
        "ct-wg0",
        PeerUpdate(peer, create=True, endpoint="192.0.2.9:51820", keepalive=25,
                   allowed_ips=(NET("10.90.0.9/32"), NET("10.100.9.0/24"))),
    )  # fmt: skip
    s.wg_update_peer("ct-wg0", PeerUpdate(private_key("nobody").public_key(), create=False))
    dev = s.wg_get("ct-wg0", "tun")
    assert dev is not None
    assert dev.public_key == key.public_key() and dev.listen_port == 51999
    assert list(dev.peers) == [peer]
    got = dev.peers[peer]
    assert (got.endpoint, got.keepalive, got.allowed_ips) == (
        "192.0.2.9:51820", 25, (NET("10.90.0.9/32"), NET("10.100.9.0/24"))
    )  # fmt: skip
    s.wg_remove_peer("ct-wg0", peer)
    dev = s.wg_get("ct-wg0", "tun")
    assert dev is not None and dict(dev.peers) == {}
    refused(lambda: s.wg_create("ct-wg0", "userspace", 1420, ALIAS), "exists")
    refused(lambda: s.delete_link("ct-br4", "tun"), "not owned by vpcctl")
    s.delete_link("ct-wg0", "tun")
    assert "ct-wg0" not in s.links()
    assert s.wg_get("ct-wg0", "tun") is None


def case_nft_load_list_delete(s: System, w: World) -> None:
    assert s.nft_list() is None
    s.nft_delete()  # absent: not an error
    table = (f"table {TABLE_FAMILY} {TABLE_NAME} {{\n"
             "  chain contract_forward {\n"
             "    type filter hook forward priority 0; policy accept;\n"
             "  }\n}\n")  # fmt: skip
    s.nft_load(table)
    listed = s.nft_list()
    assert listed is not None and "chain contract_forward" in listed
    s.nft_load(table.replace("contract_forward", "contract_again"))  # replaces, one table
    listed = s.nft_list()
    assert listed is not None and "contract_again" in listed
    assert "contract_forward" not in listed
    s.nft_delete()
    assert s.nft_list() is None


def case_forwarding(s: System, w: World) -> None:
    assert s.forwarding() is False  # a new namespace (and a new fake) forwards nothing
    s.set_forwarding(True)
    assert s.forwarding() is True
    s.set_forwarding(False)
    assert s.forwarding() is False


def case_resolve_endpoint(s: System, w: World) -> None:
    assert s.resolve_endpoint("192.0.2.5:51820") == "192.0.2.5:51820"
    assert s.resolve_endpoint("[2001:db8::1]:51820") == "[2001:db8::1]:51820"
    assert s.resolve_endpoint("localhost:51820") == "127.0.0.1:51820"
    e = refused(lambda: s.resolve_endpoint("no-such-host.invalid:51820"), "cannot resolve")
    assert e.hint == "check the name or use an IP address"


CASES = {name[len("case_") :]: fn for name, fn in globals().items() if name.startswith("case_")}


# ---------------------------------------------------------------------------------------------
# the two sides


def run_fake(case: Callable[[System, World], None], ipip: bool) -> None:
    fake = FakeSystem(backend="userspace", ipip=ipip)
    case(fake, World(foreign=lambda name: fake.add_foreign_link(name, "bridge"), ipip=ipip))


def run_linux(case: Callable[[System, World], None]) -> None:
    def foreign(name: str) -> None:
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, timeout=10)

    def inside() -> None:
        system = LinuxSystem()
        try:
            case(system, World(foreign=foreign, ipip=None))
        finally:
            system.close()

    failure = run_in_sandbox(inside, timeout=60)
    if failure is not None:
        pytest.fail(f"LinuxSystem in a fresh namespace:\n{failure}", pytrace=False)


SIDES = [
    pytest.param("fake", id="fake"),
    pytest.param("fake-no-ipip", id="fake-no-ipip"),
    pytest.param("linux", id="linux", marks=pytest.mark.lab),
]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_system_contract(name: str, side: str) -> None:
    case = CASES[name]
    if side == "linux":
        from tests.lab.conftest import require_lab

        require_lab("nft")
        run_linux(case)
    else:
        run_fake(case, ipip=side == "fake")


def test_every_system_method_is_exercised() -> None:
    """The suite names every method of the System port (so a new one gets a case)."""
    source = Path(__file__).read_text(encoding="utf-8")
    untested = {"close", "detect_backend", "resolver_running", "start_resolver", "stop_resolver"}
    methods = {n for n in System.__dict__ if not n.startswith("_")} - untested
    missing = sorted(m for m in methods if f"s.{m}(" not in source and f"system.{m}(" not in source)
    assert missing == [], missing
