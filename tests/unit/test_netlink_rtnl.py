"""Netlink (rtnetlink) against a recording fake IPRoute.

Dump messages are real pyroute2 ifinfmsg/ifaddrmsg/rtmsg objects, encoded to
wire format and decoded again.  This covers the kernel-only paths (ipip,
wireguard links) that cannot run on a machine without those modules.
"""

from __future__ import annotations

import errno
import socket
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest
from pyroute2 import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vpcctl.core.errors import KernelError
from vpcctl.host.netlink import HINT_IPIP, HINT_WG_KERNEL, Link, Netlink, Route

NLM_F_DUMP_INTR = 0x10


def _roundtrip(msg: Any, cls: Any, flags: int = 2) -> Any:
    msg.encode()
    out = cls(msg.data)
    out.decode()
    out["header"]["flags"] = flags
    return out


def link_msg(
    index: int,
    name: str,
    *,
    kind: str | None = None,
    up: bool = True,
    mtu: int = 1500,
    alias: str | None = None,
    master: int | None = None,
    data: list[list[Any]] | None = None,
) -> Any:
    m = ifinfmsg()
    m["index"] = index
    m["flags"] = 1 if up else 0
    attrs: list[list[Any]] = [["IFLA_IFNAME", name], ["IFLA_MTU", mtu]]
    if alias is not None:
        attrs.append(["IFLA_IFALIAS", alias])
    if master is not None:
        attrs.append(["IFLA_MASTER", master])
    if kind is not None:
        info: list[list[Any]] = [["IFLA_INFO_KIND", kind]]
        if data is not None:
            info.append(["IFLA_INFO_DATA", {"attrs": data}])
        attrs.append(["IFLA_LINKINFO", {"attrs": info}])
    m["attrs"] = attrs
    return _roundtrip(m, ifinfmsg)


def addr_msg(index: int, addr: str) -> Any:
    iface = IPv4Interface(addr)
    m = ifaddrmsg()
    m["family"] = socket.AF_INET
    m["index"] = index
    m["prefixlen"] = iface.network.prefixlen
    m["attrs"] = [["IFA_ADDRESS", str(iface.ip)], ["IFA_LOCAL", str(iface.ip)]]
    return _roundtrip(m, ifaddrmsg)


def route_msg(
    dst: str,
    oif: int | None,
    *,
    gw: str | None = None,
    proto: int = 211,
    table: int = 254,
    rtype: int = 1,
    flags: int = 0,
) -> Any:
    net = IPv4Network(dst)
    m = rtmsg()
    m["family"] = socket.AF_INET
    m["dst_len"] = net.prefixlen
    m["table"] = table if table < 256 else 252
    m["proto"] = proto
    m["type"] = rtype
    m["flags"] = flags
    attrs: list[list[Any]] = [["RTA_TABLE", table]]
    if net.prefixlen:
        attrs.append(["RTA_DST", str(net.network_address)])
    if oif is not None:
        attrs.append(["RTA_OIF", oif])
    if gw is not None:
        attrs.append(["RTA_GATEWAY", gw])
    m["attrs"] = attrs
    return _roundtrip(m, rtmsg)


class FakeIPRoute:
    def __init__(self) -> None:
        self.links: list[Any] = []
        self.addrs: list[Any] = []
        self.routes: list[Any] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: dict[tuple[str, str], int] = {}
        self.interrupt_once = False

    def _maybe_fail(self, what: str, cmd: str) -> None:
        code = self.fail.get((what, cmd))
        if code:
            raise NetlinkError(code)

    def get_links(self) -> list[Any]:
        if self.interrupt_once:
            self.interrupt_once = False
            bad = link_msg(99, "ghost")
            bad["header"]["flags"] |= NLM_F_DUMP_INTR
            return [bad]
        return self.links

    def get_addr(self, family: int = 0) -> list[Any]:
        return self.addrs

    def get_routes(self, family: int = 0) -> list[Any]:
        return self.routes

    def link_lookup(self, ifname: str) -> list[int]:
        return [int(m["index"]) for m in self.links if m.get_attr("IFLA_IFNAME") == ifname]

    def link(self, cmd: str, **kw: Any) -> None:
        self.calls.append(("link", cmd, kw))
        self._maybe_fail("link", cmd)
        if cmd == "add":
            self.links.append(link_msg(len(self.links) + 10, kw["ifname"], kind=kw["kind"]))

    def addr(self, cmd: str, **kw: Any) -> None:
        self.calls.append(("addr", cmd, kw))
        self._maybe_fail("addr", cmd)

    def route(self, cmd: str, **kw: Any) -> None:
        self.calls.append(("route", cmd, kw))
        self._maybe_fail("route", cmd)

    def close(self) -> None:
        return None


@pytest.fixture
def fake() -> FakeIPRoute:
    f = FakeIPRoute()
    f.links = [
        link_msg(1, "lo", up=True, mtu=65536),
        link_msg(2, "eth0"),
        link_msg(3, "vpcbr0", kind="bridge", mtu=1400, alias="vpcctl:net1"),
        link_msg(4, "vpcv0", kind="veth", master=3, up=False),
        link_msg(
            5,
            "vpcip0",
            kind="ipip",
            mtu=1480,
            alias="vpcctl:ipip",
            data=[
                ["IFLA_IPIP_LOCAL", "192.0.2.1"],
                ["IFLA_IPIP_REMOTE", "0.0.0.0"],
                ["IFLA_IPIP_TTL", 64],
            ],
        ),
        link_msg(6, "vpcwg0", kind="wireguard", mtu=1420),
    ]
    f.addrs = [
        addr_msg(3, "10.99.1.1/24"),
        addr_msg(3, "10.99.0.1/24"),
        addr_msg(2, "192.0.2.7/24"),
    ]
    f.routes = [
        route_msg("10.97.0.0/24", 5, gw="192.0.2.9", flags=4 | 16),  # onlink + linkdown
        route_msg("10.98.0.0/24", 3, gw="10.99.0.5", proto=4),  # foreign (static)
        route_msg("10.99.0.0/24", 3, proto=2),  # kernel
        route_msg("10.99.0.1/32", 3, proto=2, table=255, rtype=2),  # local table
        route_msg("0.0.0.0/0", 2, gw="192.0.2.254", proto=3),
        route_msg("10.96.0.0/24", None, proto=211),  # multipath-like: no oif
        route_msg("10.95.0.0/24", 3, proto=211, table=1000),  # other table
    ]
    return f


def test_links_parse(fake: FakeIPRoute) -> None:
    links = Netlink(ipr=fake).links()
    assert set(links) == {"lo", "eth0", "vpcbr0", "vpcv0", "vpcip0", "vpcwg0"}
    assert links["vpcbr0"] == Link(
        name="vpcbr0",
        index=3,
        kind="bridge",
        mtu=1400,
        up=True,
        alias="vpcctl:net1",
        master=None,
        addresses=(IPv4Interface("10.99.0.1/24"), IPv4Interface("10.99.1.1/24")),
    )
    assert links["vpcv0"].master == "vpcbr0" and links["vpcv0"].up is False
    assert links["eth0"].kind is None and links["eth0"].alias is None
    ipip = links["vpcip0"]
    assert (ipip.kind, ipip.ipip_local, ipip.ipip_remote) == (
        "ipip",
        IPv4Address("192.0.2.1"),
        None,
    )
    assert links["vpcwg0"].kind == "wireguard"


def test_links_retries_interrupted_dump(fake: FakeIPRoute) -> None:
    fake.interrupt_once = True
    assert "ghost" not in Netlink(ipr=fake).links()


def test_routes_filter(fake: FakeIPRoute) -> None:
    nl = Netlink(ipr=fake)
    assert nl.routes(proto=211) == [
        Route(IPv4Network("10.97.0.0/24"), "vpcip0", IPv4Address("192.0.2.9"), True, 211)
    ]
    all_main = nl.routes()
    assert [str(r.dst) for r in all_main] == [
        "0.0.0.0/0",
        "10.97.0.0/24",
        "10.98.0.0/24",
        "10.99.0.0/24",
    ]
    assert nl.routes(proto=211, table=1000) == [
        Route(IPv4Network("10.95.0.0/24"), "vpcbr0", proto=211, table=1000)
    ]


def test_add_bridge_pins_mtu_and_sets_alias(fake: FakeIPRoute) -> None:
    Netlink(ipr=fake).add_bridge("vpcbr1", mtu=1400, alias="vpcctl:net2")
    link_calls = [(c[1], c[2]) for c in fake.calls if c[0] == "link"]
    assert link_calls[0] == ("add", {"ifname": "vpcbr1", "kind": "bridge", "mtu": 1400})
    idx = fake.link_lookup("vpcbr1")[0]
    assert link_calls[1] == ("set", {"index": idx, "mtu": 1399})
    assert link_calls[2] == ("set", {"index": idx, "mtu": 1400, "ifalias": "vpcctl:net2"})


def test_add_ipip_request(fake: FakeIPRoute) -> None:
    Netlink(ipr=fake).add_ipip("vpcip1", local=IPv4Address("192.0.2.1"), mtu=1480, alias="a")
    assert fake.calls[0] == (
        "link",
        "add",
        {
            "ifname": "vpcip1",
            "kind": "ipip",
            "mtu": 1480,
            "ipip_local": "192.0.2.1",
            "ipip_remote": "0.0.0.0",
            "ipip_ttl": 64,
        },
    )


@pytest.mark.parametrize(
    ("method", "kind", "hint"),
    [("add_ipip", "ipip", HINT_IPIP), ("add_wireguard", "wireguard", HINT_WG_KERNEL)],
)
def test_add_link_module_missing(fake: FakeIPRoute, method: str, kind: str, hint: str) -> None:
    fake.fail[("link", "add")] = errno.EOPNOTSUPP
    nl = Netlink(ipr=fake)
    kwargs: dict[str, Any] = {"mtu": 1400, "alias": "x"}
    if kind == "ipip":
        kwargs["local"] = IPv4Address("192.0.2.1")
    with pytest.raises(KernelError) as exc:
        getattr(nl, method)("vpcx0", **kwargs)
    assert exc.value.hint == hint
    assert "vpcx0" in exc.value.message and f"create {kind} link" in exc.value.message


def test_add_link_exists_and_eperm(fake: FakeIPRoute) -> None:
    nl = Netlink(ipr=fake)
    fake.fail[("link", "add")] = errno.EEXIST
    with pytest.raises(KernelError) as exc:
        nl.add_bridge("eth0", mtu=1500, alias="x")
    assert exc.value.hint == "a link named eth0 exists and is not owned by vpcctl"
    fake.fail[("link", "add")] = errno.EPERM
    with pytest.raises(KernelError) as exc:
        nl.add_bridge("vpcbr9", mtu=1500, alias="x")
    assert exc.value.hint == "run as root (needs CAP_NET_ADMIN)"


def test_half_created_link_is_removed(fake: FakeIPRoute) -> None:
    fake.fail[("link", "set")] = errno.EINVAL
    with pytest.raises(KernelError):
        Netlink(ipr=fake).add_wireguard("vpcwg9", mtu=1420, alias="vpcctl:wg")
    assert fake.calls[-1][:2] == ("link", "del")


def test_route_add_del(fake: FakeIPRoute) -> None:
    nl = Netlink(ipr=fake)
    r = Route(IPv4Network("10.97.0.0/24"), "vpcip0", IPv4Address("192.0.2.9"), True, 211)
    nl.add_route(r)
    assert fake.calls[-1] == (
        "route",
        "replace",
        {
            "family": socket.AF_INET,
            "dst": "10.97.0.0/24",
            "oif": 5,
            "table": 254,
            "proto": 211,
            "type": 1,
            "gateway": "192.0.2.9",
            "scope": 0,
            "flags": 4,
        },
    )
    fake.fail[("route", "del")] = errno.ESRCH
    nl.del_route(r)  # already gone: no error
    _, cmd, spec = fake.calls[-1]
    assert cmd == "del" and spec["scope"] == 255
    with pytest.raises(KernelError) as exc:
        nl.add_route(Route(IPv4Network("10.1.0.0/24"), "nope0"))
    assert "nope0" in exc.value.message


def test_address_idempotence(fake: FakeIPRoute) -> None:
    nl = Netlink(ipr=fake)
    fake.fail[("addr", "add")] = errno.EEXIST
    nl.add_address("vpcbr0", IPv4Interface("10.99.0.1/24"))
    fake.fail[("addr", "del")] = errno.EADDRNOTAVAIL
    nl.del_address("vpcbr0", IPv4Interface("10.99.7.1/24"))
    nl.del_address("missing0", IPv4Interface("10.99.7.1/24"))
    fake.fail[("addr", "add")] = errno.EINVAL
    with pytest.raises(KernelError):
        nl.add_address("vpcbr0", IPv4Interface("10.99.0.1/24"))
