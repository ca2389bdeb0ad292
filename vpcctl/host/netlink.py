"""Kernel edge: rtnetlink (links, addresses, routes) and kernel WireGuard (genl).

This is the ONLY module of vpcctl that imports pyroute2.  IPv4 only.

Every failure of a kernel request is raised as ``vpcctl.core.errors.KernelError``
naming the operation and the object, with a hint.  Delete operations are
idempotent: deleting something that is already gone is not an error.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Network,
    ip_network,
)
from socket import AF_INET, AF_INET6, inet_ntop
from types import TracebackType
from typing import Any, Protocol, TypeVar

from pyroute2 import IPRoute, NetlinkError, WireGuard
from pyroute2.netlink.generic.wireguard import AsyncWireGuard

from vpcctl.core.errors import KernelError
from vpcctl.core.keys import psk_digest
from vpcctl.core.model import WG_MTU
from vpcctl.host.linktypes import Link, Route
from vpcctl.host.wgtypes import (
    PeerConfig,
    PeerUpdate,
    WgDevice,
    WgPeer,
    check_private_key,
    format_endpoint,
    normalize_endpoint,
    normalize_key,
    parse_endpoint,
    plan_peer_update,
    validate_ifname,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # "any scope" when deleting
RTNH_F_ONLINK = 4
IFF_UP = 0x1
NLM_F_DUMP_INTR = 0x10
DUMP_RETRIES = 5
# Allowed ips per WG_CMD_SET_DEVICE message; more are sent in follow-up
# update_only messages (like wg(8) does), keeping each message well below the
# netlink socket buffer limits.
WG_ALLOWEDIPS_PER_MSG = 256

HINT_ROOT = "run as root (needs CAP_NET_ADMIN)"
HINT_IPIP = 'kernel lacks the ipip module (modprobe ipip) — or use routing = "wireguard"'
HINT_WG_KERNEL = (
    "kernel lacks the wireguard module (modprobe wireguard) — or use the userspace "
    "backend (apt-get install wireguard-go)"
)


# --------------------------------------------------------------------------- values


# --------------------------------------------------------------------------- errors


def _code(exc: BaseException) -> int:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return code
    err = getattr(exc, "errno", None)
    return err if isinstance(err, int) and err > 0 else 0


def _kernel_error(op: str, obj: str, exc: BaseException, *, kind: str | None = None) -> KernelError:
    """Translate a netlink/OS error into a KernelError with a hint."""
    code = _code(exc)
    reason = os.strerror(code) if code else str(exc)
    message = f"{op} {obj}: {reason}" + (f" (errno {code})" if code else "")
    hint: str | None
    if code in (errno.EPERM, errno.EACCES):
        hint = HINT_ROOT
    elif kind == "ipip" and code in (errno.EOPNOTSUPP, errno.ENODEV, errno.ENOENT):
        hint = HINT_IPIP
    elif kind == "wireguard" and code in (errno.EOPNOTSUPP, errno.ENODEV, errno.ENOENT):
        hint = HINT_WG_KERNEL
    elif code == errno.EEXIST and kind is not None:
        hint = f"a link named {obj} exists and is not owned by vpcctl"
    elif code == errno.EEXIST:
        hint = f"{obj} already exists"
    elif code == errno.ENODEV:
        hint = f"no interface named {obj}"
    elif code == errno.ENETUNREACH:
        hint = "the gateway is not reachable through that device; use an onlink route"
    elif code == errno.EADDRINUSE:
        hint = "the address or port is already in use"
    elif code == errno.EINVAL:
        hint = "the kernel rejected the request as invalid (check names, MTU and addresses)"
    elif code == errno.ERANGE:
        hint = "a value is out of the range the kernel accepts (e.g. MTU)"
    else:
        hint = None
    return KernelError(message, hint)


# ------------------------------------------------------------------ rtnetlink helpers


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    getter = getattr(msg, "get_attr", None)
    if getter is not None:
        return getter(name, default)
    return default


def _dump_interrupted(msgs: Iterable[Any]) -> bool:
    for msg in msgs:
        header = msg.get("header") if isinstance(msg, Mapping) else None
        if isinstance(header, Mapping) and int(header.get("flags", 0)) & NLM_F_DUMP_INTR:
            return True
    return False


def _opt_v4(value: Any) -> IPv4Address | None:
    if value in (None, ""):
        return None
    addr = IPv4Address(value)
    return None if addr == IPv4Address(0) else addr


class Netlink:
    """One rtnetlink socket (pyroute2.IPRoute) in the current network namespace.

    Use as a context manager: ``with Netlink() as nl: ...``.
    """

    def __init__(self, *, ipr: Any = None) -> None:
        """``ipr`` injects an IPRoute-compatible object (tests); default: a new IPRoute."""
        if ipr is not None:
            self._ipr = ipr
            return
        try:
            self._ipr = IPRoute()
        except (NetlinkError, OSError) as exc:
            raise _kernel_error("open", "rtnetlink socket", exc) from exc

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- plumbing

    def _call(self, op: str, obj: str, fn: Callable[[], T], *, kind: str | None = None) -> T:
        try:
            return fn()
        except (NetlinkError, OSError) as exc:
            raise _kernel_error(op, obj, exc, kind=kind) from exc

    def _dump(self, op: str, fn: Callable[[], Iterable[Any]]) -> list[Any]:
        for _ in range(DUMP_RETRIES):
            msgs = self._call(op, "dump", lambda: list(fn()))
            if not _dump_interrupted(msgs):
                return msgs
        raise KernelError(
            f"{op}: dump kept changing", "the kernel state changed during the dump; retry"
        )

    def _index(self, op: str, name: str) -> int:
        found = self._call(op, name, lambda: list(self._ipr.link_lookup(ifname=name)))
        if not found:
            raise KernelError(f"{op} {name}: no such interface", f"no interface named {name}")
        return int(found[0])

    def _index_or_none(self, name: str) -> int | None:
        found = self._call("lookup", name, lambda: list(self._ipr.link_lookup(ifname=name)))
        return int(found[0]) if found else None

    # --------------------------------------------------------------------- read

    def links(self) -> dict[str, Link]:
        """All links of this namespace, keyed by name."""
        raw_links = self._dump("list links", lambda: self._ipr.get_links())
        raw_addrs = self._dump("list addresses", lambda: self._ipr.get_addr(family=AF_INET))
        names = {int(m["index"]): str(_attr(m, "IFLA_IFNAME")) for m in raw_links}
        addrs: dict[int, list[IPv4Interface]] = {}
        for a in raw_addrs:
            addr = _attr(a, "IFA_LOCAL") or _attr(a, "IFA_ADDRESS")
            if addr is None:
                continue
            iface = IPv4Interface(f"{addr}/{int(a['prefixlen'])}")
            addrs.setdefault(int(a["index"]), []).append(iface)
        out: dict[str, Link] = {}
        for m in raw_links:
            index = int(m["index"])
            name = names[index]
            kind: str | None = None
            local: IPv4Address | None = None
            remote: IPv4Address | None = None
            info = _attr(m, "IFLA_LINKINFO")
            if info is not None:
                kind = _attr(info, "IFLA_INFO_KIND")
                if kind == "ipip":
                    data = _attr(info, "IFLA_INFO_DATA")
                    if data is not None:
                        local = _opt_v4(_attr(data, "IFLA_IPIP_LOCAL"))
                        remote = _opt_v4(_attr(data, "IFLA_IPIP_REMOTE"))
            master_idx = _attr(m, "IFLA_MASTER")
            alias = _attr(m, "IFLA_IFALIAS")
            out[name] = Link(
                name=name,
                index=index,
                kind=str(kind) if kind else None,
                mtu=int(_attr(m, "IFLA_MTU", 0)),
                up=bool(int(m["flags"]) & IFF_UP),
                alias=str(alias) if alias else None,
                master=names.get(int(master_idx)) if master_idx else None,
                addresses=tuple(sorted(addrs.get(index, []))),
                ipip_local=local,
                ipip_remote=remote,
            )
        return out

    def link(self, name: str) -> Link | None:
        """One link by name, or None."""
        return self.links().get(name)

    def routes(
        self,
        proto: int | None = None,
        *,
        table: int = RT_TABLE_MAIN,
        links: Mapping[str, Link] | None = None,
    ) -> list[Route]:
        """IPv4 unicast routes of one table (main by default), optionally one rtm_protocol.

        ``links`` (from :meth:`links`) saves a second dump. Multipath routes (no single output
        device) are not reported.
        """
        raw = self._dump("list routes", lambda: self._ipr.get_routes(family=AF_INET))
        if links is not None:
            names = {link.index: name for name, link in links.items()}
        else:
            names = {
                int(m["index"]): str(_attr(m, "IFLA_IFNAME"))
                for m in self._dump("list links", lambda: self._ipr.get_links())
            }
        out: list[Route] = []
        for m in raw:
            rt_table = _attr(m, "RTA_TABLE", m.get("table"))
            if int(rt_table) != table or int(m["type"]) != RTN_UNICAST:
                continue
            if proto is not None and int(m["proto"]) != proto:
                continue
            oif = _attr(m, "RTA_OIF")
            if oif is None or int(oif) not in names:
                continue
            dst = _attr(m, "RTA_DST") or "0.0.0.0"
            gateway = _attr(m, "RTA_GATEWAY")
            out.append(
                Route(
                    dst=IPv4Network(f"{dst}/{int(m['dst_len'])}"),
                    dev=names[int(oif)],
                    via=IPv4Address(gateway) if gateway else None,
                    onlink=bool(int(m["flags"]) & RTNH_F_ONLINK) and gateway is not None,
                    proto=int(m["proto"]),
                    table=int(rt_table),
                )
            )
        return sorted(out, key=lambda r: (r.dst, r.dev, r.via or IPv4Address(0)))

    # -------------------------------------------------------------------- links

    def _add_link(self, name: str, kind: str, *, mtu: int, alias: str, **extra: Any) -> None:
        validate_ifname(name)
        op = f"create {kind} link"
        try:
            self._call(
                op,
                name,
                lambda: self._ipr.link("add", ifname=name, kind=kind, mtu=mtu, **extra),
                kind=kind,
            )
        except KernelError:  # refused: nothing was made (an existing link is not ours to delete)
            raise
        except BaseException:  # interrupted (SIGTERM) after the kernel may have made it
            self._delete_unowned(name)
            raise
        # The alias is the ownership marker: a half-created link without it is
        # removed again.
        try:
            if kind == "bridge":
                self._pin_bridge_mtu(name, mtu)
            self.set_link(name, mtu=mtu, alias=alias or None)
        except BaseException:  # also an interruption (SIGTERM) between the two steps
            self.delete_link(name)
            raise

    def _delete_unowned(self, name: str) -> None:
        """Remove ``name`` if it exists without an alias: the link an interrupted create made
        (the plan creates only names it did not observe, under the state directory's lock)."""
        try:
            link = self.links().get(name)
            if link is not None and not link.alias:
                self.delete_link(name)
        except Exception:  # best effort; the rollback reports what is left
            log.debug("could not remove the half-created link %s", name, exc_info=True)

    def _pin_bridge_mtu(self, name: str, mtu: int) -> None:
        """Make a bridge's MTU "set by user" so adding ports never changes it.

        A bridge MTU given at creation (IFLA_MTU) or re-set to the same value is
        not marked as user-set, and the kernel then auto-adjusts it to the
        smallest port MTU whenever a port joins.  Only a real change through
        ndo_change_mtu pins it, hence the detour through mtu - 1.
        """
        self.set_link(name, mtu=mtu - 1 if mtu > 68 else mtu + 1)

    def add_bridge(self, name: str, *, mtu: int, alias: str) -> None:
        self._add_link(name, "bridge", mtu=mtu, alias=alias)

    def add_ipip(self, name: str, *, local: IPv4Address, mtu: int, alias: str) -> None:
        """NBMA ipip tunnel: fixed local, any remote (use onlink routes via the peer)."""
        self._add_link(
            name,
            "ipip",
            mtu=mtu,
            alias=alias,
            ipip_local=str(IPv4Address(local)),
            ipip_remote="0.0.0.0",
            ipip_ttl=64,
        )

    def add_wireguard(self, name: str, *, mtu: int, alias: str) -> None:
        """Kernel WireGuard link (no keys, no peers, down)."""
        self._add_link(name, "wireguard", mtu=mtu, alias=alias)

    def delete_link(self, name: str) -> None:
        """Delete a link; a missing link is not an error."""
        index = self._index_or_none(name)
        if index is None:
            return
        try:
            self._ipr.link("del", index=index)
        except NetlinkError as exc:
            if _code(exc) == errno.ENODEV:
                return
            raise _kernel_error("delete link", name, exc) from exc
        except OSError as exc:
            raise _kernel_error("delete link", name, exc) from exc

    def set_link(
        self,
        name: str,
        *,
        mtu: int | None = None,
        up: bool | None = None,
        alias: str | None = None,
    ) -> None:
        """Change MTU / admin state / alias (alias "" clears it).  None = unchanged."""
        index = self._index("set link", name)
        spec: dict[str, Any] = {}
        if mtu is not None:
            spec["mtu"] = int(mtu)
        if alias is not None:
            spec["ifalias"] = alias
        if up is not None:
            spec["state"] = "up" if up else "down"
        if not spec:
            return
        self._call("set link", name, lambda: self._ipr.link("set", index=index, **spec))

    # ---------------------------------------------------------------- addresses

    def add_address(self, name: str, addr: IPv4Interface) -> None:
        """Add an address; already present (same address/prefix) is not an error."""
        addr = IPv4Interface(addr)
        index = self._index("add address", name)
        try:
            self._ipr.addr(
                "add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen
            )
        except NetlinkError as exc:
            if _code(exc) == errno.EEXIST:
                return
            raise _kernel_error("add address", f"{addr} on {name}", exc) from exc
        except OSError as exc:
            raise _kernel_error("add address", f"{addr} on {name}", exc) from exc

    def del_address(self, name: str, addr: IPv4Interface) -> None:
        """Remove an address; already absent is not an error."""
        addr = IPv4Interface(addr)
        index = self._index_or_none(name)
        if index is None:
            return
        try:
            self._ipr.addr(
                "del", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen
            )
        except NetlinkError as exc:
            if _code(exc) in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH):
                return
            raise _kernel_error("delete address", f"{addr} on {name}", exc) from exc
        except OSError as exc:
            raise _kernel_error("delete address", f"{addr} on {name}", exc) from exc

    # ------------------------------------------------------------------- routes

    @staticmethod
    def route_spec(r: Route, index: int, *, delete: bool = False) -> dict[str, Any]:
        """The pyroute2 keyword arguments for one route (pure; unit-tested)."""
        spec: dict[str, Any] = {
            "family": AF_INET,
            "dst": str(r.dst),
            "oif": index,
            "table": r.table,
            "proto": r.proto,
            "type": RTN_UNICAST,
        }
        if r.via is not None:
            spec["gateway"] = str(r.via)
        if delete:
            spec["scope"] = RT_SCOPE_NOWHERE
        else:
            spec["scope"] = RT_SCOPE_UNIVERSE if r.via is not None else RT_SCOPE_LINK
            if r.onlink:
                spec["flags"] = RTNH_F_ONLINK
        return spec

    def add_route(self, r: Route) -> None:
        """Create or replace (NLM_F_REPLACE) the route to r.dst in r.table.

        Note: "replace" matches on dst/table/metric only, so it also takes over a
        foreign route to the same prefix; check for one before calling.
        """
        index = self._index("add route", r.dev)
        spec = self.route_spec(r, index)
        self._call("add route", f"{r.dst} dev {r.dev}", lambda: self._ipr.route("replace", **spec))

    def del_route(self, r: Route) -> None:
        """Delete exactly this route (dst, dev, via, proto, table); absent is not an error."""
        index = self._index_or_none(r.dev)
        if index is None:
            return
        spec = self.route_spec(r, index, delete=True)
        try:
            self._ipr.route("del", **spec)
        except NetlinkError as exc:
            if _code(exc) in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                return
            raise _kernel_error("delete route", f"{r.dst} dev {r.dev}", exc) from exc
        except OSError as exc:
            raise _kernel_error("delete route", f"{r.dst} dev {r.dev}", exc) from exc


# ------------------------------------------------------------- kernel wireguard: dump


def _items(obj: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) pairs of a pyroute2 message/NLA or a plain dict.

    Accepts ``{"attrs": [(name, value), ...]}`` (the pyroute2 layout, also what
    decoded nlmsg/nla objects are) and flat ``{name: value}`` dicts.
    """
    if isinstance(obj, Mapping):
        attrs = obj.get("attrs")
        if attrs is not None:
            for item in attrs:
                yield str(item[0]), item[1]
            return
        for key, value in obj.items():
            if isinstance(key, str) and key.isupper():
                yield key, value
        return
    raise TypeError(f"cannot read netlink attributes from {type(obj).__name__}")


def _get(obj: Any, name: str) -> Any:
    for key, value in _items(obj):
        if key == name:
            return value
    return None


def _key(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("value", value.get("key"))
    if isinstance(value, bytes | bytearray | str):
        return normalize_key(bytes(value) if isinstance(value, bytearray) else value)
    raise ValueError("WireGuard key attribute has an unexpected type")


def _endpoint(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return normalize_endpoint(value) if value else None
    if isinstance(value, Mapping):
        addr, port = value.get("addr"), value.get("port")
        if not addr or not port:
            return None
        return format_endpoint(str(addr), int(port))
    raise ValueError("WireGuard endpoint attribute has an unexpected type")


def _handshake(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        sec, nsec = int(value.get("tv_sec", 0)), int(value.get("tv_nsec", 0))
    else:
        sec, nsec = int(value), 0
    if sec == 0 and nsec == 0:
        return None
    return sec + nsec / 1e9


def _allowed_ip(value: Any) -> IPv4Network | IPv6Network:
    if isinstance(value, str):
        return ip_network(value, strict=False)
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, Mapping) and value.get("addr"):
        return ip_network(str(value["addr"]), strict=False)
    family = _get(value, "WGALLOWEDIP_A_FAMILY")
    raw = _get(value, "WGALLOWEDIP_A_IPADDR")
    cidr = _get(value, "WGALLOWEDIP_A_CIDR_MASK")
    if family is None or raw is None or cidr is None:
        raise ValueError("incomplete WireGuard allowed-ip attribute")
    if isinstance(raw, str):  # pyroute2 'hex' NLA: "0a:00:00:00"
        raw = bytes.fromhex(raw.replace(":", ""))
    family = int(family)
    if family not in (AF_INET, AF_INET6):
        raise ValueError(f"unknown allowed-ip address family {family}")
    return ip_network(f"{inet_ntop(family, bytes(raw))}/{int(cidr)}", strict=False)


@dataclass
class _PeerAcc:
    endpoint: str | None = None
    keepalive: int = 0
    last_handshake: float | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    allowed: list[IPv4Network | IPv6Network] | None = None
    psk: str | None = None


def merge_wg_dump(messages: Iterable[Any], *, ifname: str | None = None) -> WgDevice:
    """Merge a (multi-message) WG_CMD_GET_DEVICE dump into one WgDevice.

    The kernel splits a big dump over several NLM_F_MULTI messages (pyroute2
    issue 1212): device attributes come only in the first message, the peer list
    continues in the next ones, and a peer whose allowed ips do not fit is
    continued in the next message as a fragment carrying only its public key and
    the remaining allowed ips.  Peers are therefore merged by public key, the
    statistics taken from the fragment that carries them and allowed ips
    concatenated.  The private key is never kept (the public key is used).
    """
    name: str | None = None
    public_key: str | None = None
    private_present = False
    listen_port = 0
    peers: dict[str, _PeerAcc] = {}
    seen_any = False
    for msg in messages:
        seen_any = True
        for attr, value in _items(msg):
            if attr == "WGDEVICE_A_IFNAME" and value:
                name = name or str(value)
            elif attr == "WGDEVICE_A_PUBLIC_KEY" and value is not None:
                public_key = _key(value)
            elif attr == "WGDEVICE_A_PRIVATE_KEY" and value is not None:
                private_present = True
            elif attr == "WGDEVICE_A_LISTEN_PORT" and value is not None:
                listen_port = int(value)
            elif attr == "WGDEVICE_A_PEERS" and value:
                for peer in value:
                    _merge_peer(peers, peer)
    if not seen_any:
        raise KernelError(
            f"read WireGuard device {ifname or '?'}: empty dump", "is it a WireGuard device?"
        )
    if public_key is None and private_present:
        # Only reachable with fabricated input: the kernel always sends both.
        raise KernelError("read WireGuard device: private key without public key", None)
    out: dict[str, WgPeer] = {}
    for key, acc in peers.items():
        allowed = acc.allowed or []
        out[key] = WgPeer(
            public_key=key,
            endpoint=acc.endpoint,
            allowed_ips=tuple(n for n in allowed if isinstance(n, IPv4Network)),
            keepalive=acc.keepalive,
            last_handshake=acc.last_handshake,
            rx_bytes=acc.rx_bytes,
            tx_bytes=acc.tx_bytes,
            allowed_ips_v6=tuple(n for n in allowed if isinstance(n, IPv6Network)),
            psk_digest=acc.psk,
        )
    return WgDevice(
        name=name or ifname or "",
        public_key=public_key,
        listen_port=listen_port,
        peers=out,
        backend="kernel",
    )


def _merge_peer(peers: dict[str, _PeerAcc], peer: Any) -> None:
    key_value = _get(peer, "WGPEER_A_PUBLIC_KEY")
    if key_value is None:
        raise KernelError("read WireGuard device: peer without public key", None)
    key = _key(key_value)
    acc = peers.setdefault(key, _PeerAcc())
    for attr, value in _items(peer):
        if value is None:
            continue
        if attr == "WGPEER_A_ENDPOINT":
            acc.endpoint = _endpoint(value)
        elif attr == "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL":
            acc.keepalive = int(value)
        elif attr == "WGPEER_A_LAST_HANDSHAKE_TIME":
            acc.last_handshake = _handshake(value)
        elif attr == "WGPEER_A_RX_BYTES":
            acc.rx_bytes = int(value)
        elif attr == "WGPEER_A_TX_BYTES":
            acc.tx_bytes = int(value)
        elif attr == "WGPEER_A_PRESHARED_KEY":
            acc.psk = psk_digest(b64decode(_key(value)))  # kept as a digest only
        elif attr == "WGPEER_A_ALLOWEDIPS":
            if acc.allowed is None:
                acc.allowed = []
            acc.allowed.extend(_allowed_ip(a) for a in value)


# -------------------------------------------------------------- kernel wireguard: set


def kernel_peer_requests(
    update: PeerUpdate, *, chunk: int = WG_ALLOWEDIPS_PER_MSG
) -> list[dict[str, Any]]:
    """pyroute2 ``WireGuard.set(peer=...)`` dicts for one PeerUpdate (pure).

    The first request carries the flags (update_only unless the peer is new,
    replace_allowed_ips), endpoint and keepalive; allowed ips beyond ``chunk``
    follow in update_only requests without replace, so the peer is never
    recreated and earlier chunks are kept.
    """
    ips = [str(n) for n in update.allowed_ips]
    first: dict[str, Any] = {"public_key": update.public_key}
    if not update.create:
        first["update_only"] = True
    if update.replace_allowed_ips:
        first["replace_allowed_ips"] = True
    if update.endpoint is not None:
        addr, port = parse_endpoint(update.endpoint)
        first["endpoint_addr"] = str(addr)
        first["endpoint_port"] = port
    if update.keepalive is not None:
        first["persistent_keepalive"] = update.keepalive
    if update.preshared_key is not None:
        first["preshared_key"] = update.preshared_key.to_base64()
    if ips or update.replace_allowed_ips:
        first["allowed_ips"] = ips[:chunk]
    requests = [first]
    for start in range(chunk, len(ips), chunk):
        requests.append(
            {
                "public_key": update.public_key,
                "update_only": True,
                "allowed_ips": ips[start : start + chunk],
            }
        )
    return requests


class _QuietAsyncWireGuard(AsyncWireGuard):  # type: ignore[misc]
    # pyroute2 logs "protocol not found" at ERROR level on every failed family
    # lookup; availability probing is expected to fail, so keep it at debug.
    module_err_level = "debug"


class _QuietWireGuard(WireGuard):  # type: ignore[misc]
    async_class = _QuietAsyncWireGuard


class GenlWireGuard(Protocol):
    """The part of pyroute2.WireGuard that KernelWireGuard uses (fakes in tests)."""

    def info(self, interface: str) -> Sequence[Any]: ...

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


def _open_genl() -> GenlWireGuard:
    sock: GenlWireGuard = _QuietWireGuard()
    return sock


def kernel_wireguard_available() -> bool:
    """True if the "wireguard" generic netlink family resolves (module loaded)."""
    try:
        _open_genl().close()
    except (NetlinkError, OSError) as exc:
        log.debug("wireguard genl family not resolvable: %s", exc)
        return False
    return True


def probe_wireguard_link() -> bool:
    """Create and delete a throwaway wireguard link (lets the kernel autoload the module).

    The probe link is always removed again.
    """
    name = "vpcprobe" + secrets.token_hex(3)
    with Netlink() as nl:
        created = False
        try:
            nl._ipr.link("add", ifname=name, kind="wireguard")
            created = True
        except (NetlinkError, OSError) as exc:
            log.debug("wireguard link probe failed: %s", exc)
        finally:
            if created or nl._index_or_none(name) is not None:
                nl.delete_link(name)
    return created


class KernelWireGuard:
    """WireGuardBackend over the kernel module (generic netlink via pyroute2.WireGuard)."""

    name = "kernel"

    def __init__(
        self,
        *,
        genl_factory: Callable[[], GenlWireGuard] = _open_genl,
        netlink_factory: Callable[[], Netlink] = Netlink,
    ) -> None:
        self._genl_factory = genl_factory
        self._netlink_factory = netlink_factory

    @contextmanager
    def _genl(self, op: str, ifname: str) -> Iterator[GenlWireGuard]:
        try:
            sock = self._genl_factory()
        except (NetlinkError, OSError) as exc:
            if _code(exc) in (errno.ENOENT, errno.EOPNOTSUPP):
                raise KernelError(
                    f"{op} {ifname}: kernel WireGuard is not available", HINT_WG_KERNEL
                ) from exc
            raise _kernel_error(op, ifname, exc) from exc
        try:
            yield sock
        except (NetlinkError, OSError) as exc:
            code = _code(exc)
            if code == errno.ENODEV:
                raise KernelError(
                    f"{op} {ifname}: no such WireGuard device",
                    f"create it first (no interface named {ifname})",
                ) from exc
            if code == errno.EOPNOTSUPP:
                raise KernelError(
                    f"{op} {ifname}: not a kernel WireGuard device",
                    f"{ifname} exists but is of another kind (a wireguard-go tun?)",
                ) from exc
            raise _kernel_error(op, ifname, exc) from exc
        finally:
            sock.close()

    def exists(self, ifname: str) -> bool:
        with self._netlink_factory() as nl:
            link = nl.link(ifname)
        return link is not None and link.kind == "wireguard"

    def create(self, ifname: str, *, mtu: int | None = None, alias: str | None = None) -> None:
        with self._netlink_factory() as nl:
            nl.add_wireguard(ifname, mtu=mtu or WG_MTU, alias=alias or "")

    def delete(self, ifname: str) -> None:
        with self._netlink_factory() as nl:
            link = nl.link(ifname)
            if link is None:
                return
            if link.kind != "wireguard":
                raise KernelError(
                    f"delete WireGuard device {ifname}: it is a {link.kind or 'plain'} link",
                    f"a link named {ifname} exists and is not owned by vpcctl",
                )
            nl.delete_link(ifname)

    def get(self, ifname: str) -> WgDevice:
        for _ in range(DUMP_RETRIES):
            with self._genl("read WireGuard device", ifname) as wg:
                msgs = list(wg.info(ifname))
            if not _dump_interrupted(msgs):
                return merge_wg_dump(msgs, ifname=ifname)
            log.debug("wireguard dump of %s interrupted, retrying", ifname)
        raise KernelError(
            f"read WireGuard device {ifname}: dump kept changing",
            "peers were modified during the dump; retry",
        )

    def set_device(
        self, ifname: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        kwargs: dict[str, Any] = {}
        if private_key is not None:
            kwargs["private_key"] = b64encode(check_private_key(private_key)).decode("ascii")
        if listen_port is not None:
            if not 0 <= listen_port <= 65535:
                raise ValueError(f"listen_port {listen_port} out of range")
            kwargs["listen_port"] = listen_port
        if not kwargs:
            return
        with self._genl("configure WireGuard device", ifname) as wg:
            wg.set(ifname, **kwargs)

    def set_peer(self, ifname: str, peer: PeerConfig) -> None:
        current = self.get(ifname).peers.get(peer.public_key)
        update = plan_peer_update(current, peer)
        if update is None:
            return
        with self._genl(f"set peer {peer.public_key[:8]}… on", ifname) as wg:
            for request in kernel_peer_requests(update):
                wg.set(ifname, peer=request)

    def update_peer(self, ifname: str, update: PeerUpdate) -> None:
        """Send a PeerUpdate computed from an earlier observation (no read first)."""
        with self._genl(f"set peer {update.public_key[:8]}… on", ifname) as wg:
            for request in kernel_peer_requests(update):
                wg.set(ifname, peer=request)

    def remove_peer(self, ifname: str, public_key: str) -> None:
        key = normalize_key(public_key)
        with self._genl(f"remove peer {key[:8]}… from", ifname) as wg:
            wg.set(ifname, peer={"public_key": key, "remove": True})


__all__ = [
    "GenlWireGuard",
    "KernelWireGuard",
    "Link",
    "Netlink",
    "Route",
    "kernel_peer_requests",
    "kernel_wireguard_available",
    "merge_wg_dump",
    "probe_wireguard_link",
]


# ---------------------------------------------------------------------------------------------
# conntrack


def delete_conntrack(pairs: Iterable[tuple[IPv4Address, IPv4Address]]) -> int:
    """Delete the connection-tracking entries of connections DNAT-ed from a VIP to a backend
    that left (original destination ``vip``, reply source ``backend``; any protocol, so UDP
    flows move on too), like kube-proxy's conntrack cleanup. Returns how many were deleted."""
    from pyroute2 import Conntrack

    want = {(str(vip), str(backend)) for vip, backend in pairs}
    if not want:
        return 0
    deleted = 0
    try:
        ct = Conntrack()
    except (OSError, NetlinkError) as exc:
        raise _kernel_error("open", "conntrack", exc) from None
    try:
        for entry in list(ct.dump_entries()):
            if (entry.tuple_orig.daddr, entry.tuple_reply.saddr) in want:
                try:
                    ct.delete(entry)
                    deleted += 1
                except NetlinkError as exc:
                    if _code(exc) != errno.ENOENT:  # gone already: fine
                        raise _kernel_error("delete", "conntrack entry", exc) from None
    except (OSError, NetlinkError) as exc:
        raise _kernel_error("dump", "conntrack", exc) from None
    finally:
        ct.close()
    return deleted
