"""Kernel WireGuard: multi-message dump merge (pyroute2 issue 1212), request building.

The dump messages are real pyroute2 ``wgmsg`` objects: encoded to netlink wire
format and decoded again, exactly like pyroute2.WireGuard.info() returns them.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import types
from base64 import b64encode
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from pyroute2 import NetlinkError
from pyroute2.netlink.generic.wireguard import (
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    AsyncWireGuard,
    wgmsg,
)

from vpcctl.core.errors import KernelError
from vpcctl.host.netlink import (
    HINT_IPIP,
    HINT_ROOT,
    KernelWireGuard,
    Netlink,
    Route,
    _kernel_error,
    kernel_peer_requests,
    merge_wg_dump,
)
from vpcctl.host.wgtypes import PeerConfig, PeerUpdate, WireGuardBackend

NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10


def rand_key() -> str:
    return b64encode(os.urandom(32)).decode()


def allowed(net: str) -> dict[str, Any]:
    n = IPv4Network(net)
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", socket.AF_INET],
            ["WGALLOWEDIP_A_IPADDR", n.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", n.prefixlen],
        ]
    }


def full_peer(key: str, nets: Sequence[str], i: int) -> dict[str, Any]:
    return {
        "attrs": [
            ["WGPEER_A_PUBLIC_KEY", key],
            ["WGPEER_A_PRESHARED_KEY", b64encode(bytes(32)).decode()],
            ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000 + i, "tv_nsec": 250000000}],
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
            ["WGPEER_A_TX_BYTES", 1000 + i],
            ["WGPEER_A_RX_BYTES", 2000 + i],
            ["WGPEER_A_PROTOCOL_VERSION", 1],
            ["WGPEER_A_ENDPOINT", {"addr": f"192.0.2.{i % 250 + 1}", "port": 51820}],
            ["WGPEER_A_ALLOWEDIPS", [allowed(n) for n in nets]],
        ]
    }


def continuation(key: str, nets: Sequence[str]) -> dict[str, Any]:
    """What the kernel sends for a peer continued in the next message."""
    return {
        "attrs": [
            ["WGPEER_A_PUBLIC_KEY", key],
            ["WGPEER_A_ALLOWEDIPS", [allowed(n) for n in nets]],
        ]
    }


def wire(attrs: list[list[Any]], flags: int = NLM_F_MULTI) -> wgmsg:
    """Encode to netlink bytes and decode back, like a received dump message."""
    msg = wgmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    out = wgmsg(msg.data)
    out.decode()
    out["header"]["flags"] = flags
    return out


PRIV = bytes(range(1, 33))
DEV_PUB = rand_key()


def device_attrs() -> list[list[Any]]:
    return [
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        ["WGDEVICE_A_FWMARK", 0],
        ["WGDEVICE_A_IFINDEX", 7],
        ["WGDEVICE_A_IFNAME", "vpc0"],
        ["WGDEVICE_A_PRIVATE_KEY", b64encode(PRIV).decode()],
        ["WGDEVICE_A_PUBLIC_KEY", DEV_PUB],
    ]


def nets_for(i: int) -> list[str]:
    return [f"10.{i // 256}.{i % 256}.0/24", f"172.16.{i % 256}.{i // 256}/32"]


def big_dump(n_peers: int = 150) -> tuple[list[wgmsg], list[str], str, list[str]]:
    """n peers over 3 messages; peer #60 is split between message 1 and 2."""
    keys = [rand_key() for _ in range(n_peers)]
    split_key = keys[60]
    split_nets = [f"10.200.{j}.0/24" for j in range(40)]
    msg1_peers = [full_peer(k, nets_for(i), i) for i, k in enumerate(keys[:60])]
    msg1_peers.append(full_peer(split_key, split_nets[:25], 60))
    msg2_peers = [continuation(split_key, split_nets[25:])]
    msg2_peers += [full_peer(k, nets_for(i), i) for i, k in enumerate(keys[61:110], 61)]
    msg3_peers = [full_peer(k, nets_for(i), i) for i, k in enumerate(keys[110:], 110)]
    msgs = [
        wire([*device_attrs(), ["WGDEVICE_A_PEERS", msg1_peers]]),
        wire([["WGDEVICE_A_PEERS", msg2_peers]]),
        wire([["WGDEVICE_A_PEERS", msg3_peers]]),
    ]
    return msgs, keys, split_key, split_nets


# ------------------------------------------------------------------------- merge


def test_merge_multi_message_dump() -> None:
    msgs, keys, split_key, split_nets = big_dump(150)
    dev = merge_wg_dump(msgs)
    assert dev.name == "vpc0"
    assert dev.backend == "kernel"
    assert dev.listen_port == 51820
    assert dev.public_key == DEV_PUB
    assert list(dev.peers) == keys  # dump order kept, nothing lost, no duplicates
    for i, key in enumerate(keys):
        peer = dev.peers[key]
        if key == split_key:
            continue
        assert peer.allowed_ips == tuple(sorted(IPv4Network(n) for n in nets_for(i)))
        assert peer.endpoint == f"192.0.2.{i % 250 + 1}:51820"
        assert (peer.tx_bytes, peer.rx_bytes, peer.keepalive) == (1000 + i, 2000 + i, 25)
        assert peer.last_handshake == pytest.approx(1700000000 + i + 0.25)
    split = dev.peers[split_key]
    assert split.allowed_ips == tuple(sorted(IPv4Network(n) for n in split_nets))
    # stats come from the first fragment and are not reset by the continuation
    assert (split.tx_bytes, split.rx_bytes, split.keepalive) == (1060, 2060, 25)
    assert split.endpoint == "192.0.2.61:51820"
    assert split.last_handshake is not None


def test_merge_first_message_only_would_lose_peers() -> None:
    msgs, _keys, _, _ = big_dump(150)
    assert len(merge_wg_dump(msgs[:1]).peers) == 61  # what issue 1212 reports


def test_merge_never_exposes_private_key() -> None:
    msgs, _, _, _ = big_dump(150)
    dev = merge_wg_dump(msgs)
    text = repr(dev) + str(dict(dev.peers))
    assert b64encode(PRIV).decode() not in text and PRIV.hex() not in text


def test_merge_plain_dicts() -> None:
    k1, k2 = rand_key(), rand_key()
    msgs: list[dict[str, Any]] = [
        {
            "WGDEVICE_A_IFNAME": "vpc1",
            "WGDEVICE_A_LISTEN_PORT": 1,
            "WGDEVICE_A_PEERS": [
                {
                    "WGPEER_A_PUBLIC_KEY": k1.encode(),
                    "WGPEER_A_ENDPOINT": {"addr": "2001:db8::1", "port": 9},
                    "WGPEER_A_LAST_HANDSHAKE_TIME": {"tv_sec": 0, "tv_nsec": 0},
                    "WGPEER_A_ALLOWEDIPS": [{"addr": "10.0.0.0/24"}],
                },
                {"WGPEER_A_PUBLIC_KEY": k2},
            ],
        },
        {
            "attrs": [
                [
                    "WGDEVICE_A_PEERS",
                    [
                        {
                            "attrs": [
                                ["WGPEER_A_PUBLIC_KEY", k1],
                                ["WGPEER_A_ALLOWEDIPS", ["10.0.1.0/24"]],
                            ]
                        }
                    ],
                ]
            ]
        },
    ]
    dev = merge_wg_dump(msgs)
    assert dev.name == "vpc1" and dev.public_key is None
    assert dev.peers[k1].allowed_ips == (IPv4Network("10.0.0.0/24"), IPv4Network("10.0.1.0/24"))
    assert dev.peers[k1].endpoint == "[2001:db8::1]:9"
    assert dev.peers[k1].last_handshake is None
    assert dev.peers[k2].allowed_ips == () and dev.peers[k2].endpoint is None


def test_merge_empty_dump_raises() -> None:
    with pytest.raises(KernelError):
        merge_wg_dump([], ifname="vpc0")


# -------------------------------------------------------------- request building


def encode_set(ifname: str, peer: dict[str, Any]) -> bytes:
    """Encode a WG_CMD_SET_DEVICE exactly like pyroute2.WireGuard.set(peer=...) does."""
    stub = types.SimpleNamespace()
    stub._wg_test_key = lambda k: AsyncWireGuard._wg_test_key(stub, k)
    stub._wg_build_allowedips = lambda ips: AsyncWireGuard._wg_build_allowedips(stub, ips)
    msg = wgmsg()
    msg["cmd"] = 1
    msg["version"] = 1
    msg["attrs"].append(["WGDEVICE_A_IFNAME", ifname])
    AsyncWireGuard._wg_set_peer(stub, msg, peer)
    msg.encode()
    return bytes(msg.data)


def nlas(data: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 0
    while off + 4 <= len(data):
        length, typ = struct.unpack_from("HH", data, off)
        out.append((typ & 0x3FFF, data[off + 4 : off + length]))
        off += (length + 3) & ~3
    return out


def wire_peer(data: bytes) -> dict[int, bytes]:
    """The single peer NLA of an encoded set message, {type: payload}."""
    top = dict(nlas(data[16 + 4 :]))  # nlmsghdr + genlmsghdr
    (peer,) = nlas(top[8])  # WGDEVICE_A_PEERS -> one nested peer
    return dict(nlas(peer[1]))


def test_kernel_requests_create() -> None:
    key = rand_key()
    upd = PeerUpdate(key, True, "192.0.2.2:51820", 25, True, (IPv4Network("10.0.0.0/24"),))
    (req,) = kernel_peer_requests(upd)
    assert req == {
        "public_key": key,
        "replace_allowed_ips": True,
        "endpoint_addr": "192.0.2.2",
        "endpoint_port": 51820,
        "persistent_keepalive": 25,
        "allowed_ips": ["10.0.0.0/24"],
    }
    attrs = wire_peer(encode_set("vpc0", req))
    assert struct.unpack("I", attrs[3])[0] == WGPEER_F_REPLACE_ALLOWEDIPS  # no UPDATE_ONLY
    assert len(attrs[4]) == 16  # sizeof(struct sockaddr_in), as the kernel requires
    family = struct.unpack_from("H", attrs[4], 0)[0]
    port = struct.unpack_from(">H", attrs[4], 2)[0]
    assert (family, port, attrs[4][4:8]) == (socket.AF_INET, 51820, IPv4Address("192.0.2.2").packed)
    assert struct.unpack("H", attrs[5])[0] == 25
    (aip,) = nlas(attrs[9])
    aip_attrs = dict(nlas(aip[1]))
    assert aip_attrs[2] == IPv4Network("10.0.0.0/24").network_address.packed  # 4 bytes
    assert aip_attrs[3][0] == 24


def test_kernel_requests_update_chunks() -> None:
    key = rand_key()
    nets = tuple(IPv4Network(f"10.{i // 256}.{i % 256}.0/24") for i in range(600))
    upd = PeerUpdate(key, False, None, None, True, nets)
    reqs = kernel_peer_requests(upd, chunk=256)
    assert len(reqs) == 3
    assert reqs[0]["update_only"] and reqs[0]["replace_allowed_ips"]
    assert "endpoint_addr" not in reqs[0] and "persistent_keepalive" not in reqs[0]
    for r in reqs[1:]:
        assert r["update_only"] and "replace_allowed_ips" not in r
    assert sum(len(r["allowed_ips"]) for r in reqs) == 600
    flags = struct.unpack("I", wire_peer(encode_set("vpc0", reqs[0]))[3])[0]
    assert flags == WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS
    flags = struct.unpack("I", wire_peer(encode_set("vpc0", reqs[1]))[3])[0]
    assert flags == WGPEER_F_UPDATE_ONLY


def test_kernel_requests_ipv6_endpoint_size() -> None:
    upd = PeerUpdate(rand_key(), False, "[2001:db8::1]:51820")
    (req,) = kernel_peer_requests(upd)
    assert "allowed_ips" not in req  # nothing to change: do not touch allowed ips
    assert len(wire_peer(encode_set("vpc0", req))[4]) == 28  # sizeof(struct sockaddr_in6)


# ---------------------------------------------------------- KernelWireGuard fakes


class FakeGenl:
    def __init__(self, dumps: list[list[Any]]) -> None:
        self.dumps = dumps
        self.sets: list[dict[str, Any]] = []
        self.closed = 0

    def info(self, interface: str) -> Sequence[Any]:
        return self.dumps.pop(0) if len(self.dumps) > 1 else self.dumps[0]

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> Any:
        self.sets.append(
            {
                "interface": interface,
                "listen_port": listen_port,
                "private_key": private_key,
                "peer": peer,
            }
        )
        return None

    def close(self) -> None:
        self.closed += 1


class RaisingGenl(FakeGenl):
    def __init__(self, code: int) -> None:
        super().__init__([[]])
        self.code = code

    def info(self, interface: str) -> Sequence[Any]:
        raise NetlinkError(self.code)


def make_backend(genl: FakeGenl) -> KernelWireGuard:
    def no_netlink() -> Netlink:
        raise AssertionError("netlink not expected")

    return KernelWireGuard(genl_factory=lambda: genl, netlink_factory=no_netlink)


def test_kernel_backend_is_a_backend() -> None:
    assert isinstance(make_backend(FakeGenl([[]])), WireGuardBackend)


def test_kernel_get_retries_interrupted_dump() -> None:
    msgs, _keys, _, _ = big_dump(150)
    interrupted = [
        wire([*device_attrs(), ["WGDEVICE_A_PEERS", []]], flags=NLM_F_MULTI | NLM_F_DUMP_INTR)
    ]
    genl = FakeGenl([interrupted, msgs])
    dev = make_backend(genl).get("vpc0")
    assert len(dev.peers) == 150
    assert genl.closed == 2


def test_kernel_get_gives_up_on_permanent_interrupt() -> None:
    bad = [wire(device_attrs(), flags=NLM_F_MULTI | NLM_F_DUMP_INTR)]
    with pytest.raises(KernelError):
        make_backend(FakeGenl([bad])).get("vpc0")


def test_kernel_set_peer_updates_in_place_only_that_peer() -> None:
    msgs, keys, _, _ = big_dump(150)
    genl = FakeGenl([msgs])
    backend = make_backend(genl)
    nets = (*[IPv4Network(n) for n in nets_for(5)], IPv4Network("10.250.0.0/24"))
    backend.set_peer("vpc0", PeerConfig(keys[5], "192.0.2.6:51820", nets, 25))
    (call,) = genl.sets
    assert call["peer"] == {
        "public_key": keys[5],
        "update_only": True,
        "allowed_ips": ["10.250.0.0/24"],
    }
    new_key = rand_key()
    backend.set_peer("vpc0", PeerConfig(new_key, None, (IPv4Network("10.251.0.0/24"),), 0))
    assert genl.sets[1]["peer"]["public_key"] == new_key
    assert "update_only" not in genl.sets[1]["peer"]
    assert all(s["peer"]["public_key"] in (keys[5], new_key) for s in genl.sets)


def test_kernel_set_device_and_remove_peer() -> None:
    genl = FakeGenl([[]])
    backend = make_backend(genl)
    backend.set_device("vpc0", private_key=PRIV, listen_port=51820)
    assert genl.sets[0]["private_key"] == b64encode(PRIV).decode()
    assert genl.sets[0]["listen_port"] == 51820
    key = rand_key()
    backend.remove_peer("vpc0", key)
    assert genl.sets[1]["peer"] == {"public_key": key, "remove": True}
    flags = struct.unpack("I", wire_peer(encode_set("vpc0", genl.sets[1]["peer"]))[3])[0]
    assert flags == WGPEER_F_REMOVE_ME
    with pytest.raises(ValueError):
        backend.set_device("vpc0", private_key=b"short")


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (errno.ENODEV, "no such WireGuard device"),
        (errno.EOPNOTSUPP, "not a kernel WireGuard"),
        (errno.EPERM, "Operation not permitted"),
    ],
)
def test_kernel_errors_are_kernelerror(code: int, needle: str) -> None:
    with pytest.raises(KernelError) as exc:
        make_backend(RaisingGenl(code)).get("vpc0")
    assert needle in exc.value.message and exc.value.hint
    assert "vpc0" in exc.value.message


def test_kernel_module_missing() -> None:
    def factory() -> FakeGenl:
        raise NetlinkError(errno.ENOENT)

    backend = KernelWireGuard(genl_factory=factory)
    with pytest.raises(KernelError) as exc:
        backend.get("vpc0")
    assert "modprobe wireguard" in (exc.value.hint or "")


# ------------------------------------------------------------- rtnetlink helpers


def test_route_spec() -> None:
    r = Route(IPv4Network("10.2.0.0/24"), "br0", IPv4Address("10.9.9.9"), True, 211)
    spec = Netlink.route_spec(r, 5)
    assert spec["flags"] == 4 and spec["scope"] == 0 and spec["proto"] == 211
    assert spec["gateway"] == "10.9.9.9" and spec["oif"] == 5 and spec["table"] == 254
    direct = Netlink.route_spec(Route(IPv4Network("10.3.0.0/24"), "br0", proto=211), 5)
    assert direct["scope"] == 253 and "flags" not in direct and "gateway" not in direct
    assert Netlink.route_spec(r, 5, delete=True)["scope"] == 255
    with pytest.raises(ValueError):
        Route(IPv4Network("10.2.0.0/24"), "br0", onlink=True)


def test_error_hints() -> None:
    assert _kernel_error("create ipip link", "vpcip", NetlinkError(95), kind="ipip").hint == (
        HINT_IPIP
    )
    err = _kernel_error("create bridge link", "vpcbr", NetlinkError(17), kind="bridge")
    assert err.hint == "a link named vpcbr exists and is not owned by vpcctl"
    assert "vpcbr" in err.message and "create bridge link" in err.message
    assert _kernel_error("add route", "x", NetlinkError(1)).hint == HINT_ROOT
