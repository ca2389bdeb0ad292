"""A fake System (the agent's kernel adapter) for fast tests and failure injection.

It implements the same protocol as vpcctl.host.kernel.LinuxSystem, in memory, and fails where
the kernel fails, with the same error type (KernelError): creating a link whose name is taken,
changing or addressing a link that does not exist, a route through a missing device, a WireGuard
call on a missing device, an ipip tunnel on a kernel without ipip (``ipip=False``), an endpoint
name that does not resolve. tests/lab/test_system_contract.py runs one behaviour suite against
this fake and against LinuxSystem in a network namespace, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from vpcctl.core.errors import KernelError
from vpcctl.core.keys import PrivateKey
from vpcctl.host.linktypes import Link, Route
from vpcctl.host.netlink import HINT_IPIP
from vpcctl.host.wgtypes import PeerUpdate, WgDevice, WgPeer

WG_KIND = {"kernel": "wireguard", "userspace": "tun"}


class FakeSystem:
    def __init__(
        self,
        backend: str = "userspace",
        *,
        ipip: bool = True,
        names: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.links_: dict[str, Link] = {}
        self.routes_: list[Route] = []
        self.wg_: dict[str, dict[str, object]] = {}
        self.nft: str | None = None
        self.fwd = False
        self.calls: list[str] = []
        self.fail_on: dict[str, str] = {}  # method name -> error message, fails once
        self.fail_always: dict[str, str] = {}  # method name -> error message, fails every time
        self._index = 10
        self.procs: dict[str, tuple[str, ...]] = {}  # pid file name -> argv (resolver, daemon)
        self.ipip = ipip  # does the kernel have the ipip module?
        self.names = {"localhost": "127.0.0.1", **(names or {})}  # what getaddrinfo would say

    # helpers -------------------------------------------------------------------------------
    def _call(self, name: str, *args: object) -> None:
        self.calls.append(name)
        if name in self.fail_always:
            raise KernelError(self.fail_always[name], "injected failure")
        if name in self.fail_on:
            raise KernelError(self.fail_on.pop(name), "injected failure")

    def _taken(self, name: str, kind: str) -> None:
        if name in self.links_:
            raise KernelError(
                f"create {kind} link {name}: File exists (errno 17)",
                f"a link named {name} exists and is not owned by vpcctl",
            )

    def _link(self, op: str, name: str) -> Link:
        link = self.links_.get(name)
        if link is None:
            raise KernelError(f"{op} {name}: no such interface", f"no interface named {name}")
        return link

    def _wg(self, name: str) -> dict[str, object]:
        device = self.wg_.get(name)
        if device is None or name not in self.links_:
            raise KernelError(f"WireGuard interface {name} does not exist", "re-run the apply")
        return device

    def snapshot(self) -> tuple[object, ...]:
        wg = {
            n: (d["key"], d["port"], tuple(sorted((k, repr(v)) for k, v in d["peers"].items())))  # type: ignore[attr-defined]
            for n, d in self.wg_.items()
        }
        return (dict(self.links_), sorted(map(str, self.routes_)), wg, self.nft, self.fwd,
                sorted(self.procs.items()))  # fmt: skip

    def add_foreign_link(self, name: str, kind: str | None = "dummy") -> None:
        self._index += 1
        self.links_[name] = Link(name, self._index, kind, 1500, True, None, None, ())

    # System protocol ------------------------------------------------------------------------
    def links(self) -> dict[str, Link]:
        return dict(self.links_)

    def routes(self) -> list[Route]:
        """Sorted like the real dump (netlink.Netlink.routes)."""
        return sorted(self.routes_, key=lambda r: (r.dst, r.dev, r.via or IPv4Address(0)))

    def detect_backend(self) -> str:
        return self.backend

    def wg_get(self, name: str, kind: str | None) -> WgDevice | None:
        """Like the kernel: the link kind says which backend to ask; any other kind is none."""
        if kind not in WG_KIND.values():
            return None
        d = self.wg_.get(name)
        link = self.links_.get(name)
        if d is None or link is None or link.kind != kind:
            return None
        key = d["key"]
        return WgDevice(
            name=name,
            public_key=PrivateKey(key).public_key() if isinstance(key, bytes) else None,
            listen_port=int(d["port"]),  # type: ignore[call-overload]
            peers=dict(d["peers"]),  # type: ignore[call-overload]
            backend="kernel" if kind == "wireguard" else "userspace",
        )

    def wg_create(self, name: str, backend: str, mtu: int, alias: str) -> None:
        self._call("wg_create")
        kind = WG_KIND[backend]
        if name in self.links_:
            raise KernelError(
                f"create WireGuard device {name}: name taken",
                f"a link named {name} exists and is not owned by vpcctl",
            )
        self._index += 1
        self.links_[name] = Link(name, self._index, kind, mtu, False, alias, None, ())
        self.wg_[name] = {"key": None, "port": 0, "peers": {}}

    def wg_set_device(
        self, name: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        self._call("wg_set_device")
        device = self._wg(name)
        if private_key is not None:
            device["key"] = private_key
        if listen_port is not None:
            device["port"] = listen_port

    def wg_update_peer(self, name: str, update: PeerUpdate) -> None:
        self._call("wg_set_peer")
        peers = self._wg(name)["peers"]
        assert isinstance(peers, dict)
        old = peers.get(update.public_key)
        if old is None and not update.create:
            return  # update_only on a missing peer: WireGuard ignores it
        ips = set(update.allowed_ips) | (
            set() if old is None or update.replace_allowed_ips else set(old.allowed_ips)
        )
        peers[update.public_key] = WgPeer(
            update.public_key,
            update.endpoint if update.endpoint is not None else (old.endpoint if old else None),
            tuple(sorted(ips)),
            update.keepalive if update.keepalive is not None else (old.keepalive if old else 0),
            None,
            0,
            0,
            psk_digest=(
                update.preshared_key.digest()
                if update.preshared_key is not None
                else (old.psk_digest if old else None)
            ),
        )

    def wg_remove_peer(self, name: str, public_key: str) -> None:
        self._call("wg_remove_peer")
        peers = self._wg(name)["peers"]
        assert isinstance(peers, dict)
        peers.pop(public_key, None)

    def add_bridge(self, name: str, mtu: int, alias: str) -> None:
        self._call("add_bridge")
        self._taken(name, "bridge")
        self._index += 1
        self.links_[name] = Link(name, self._index, "bridge", mtu, False, alias, None, ())

    def add_ipip(self, name: str, local: object, mtu: int, alias: str) -> None:
        self._call("add_ipip")
        assert isinstance(local, IPv4Address)
        if not self.ipip:
            raise KernelError(
                f"create ipip link {name}: Operation not supported (errno 95)", HINT_IPIP
            )
        self._taken(name, "ipip")
        self._index += 1
        self.links_[name] = Link(name, self._index, "ipip", mtu, False, alias, None, (), local)

    def delete_link(self, name: str, kind: str | None) -> None:
        self._call("delete_link")
        link = self.links_.get(name)
        if kind == "tun" and link is not None and link.kind != "tun":
            raise KernelError(
                f"delete WireGuard device {name}: it is a {link.kind or 'plain'} link",
                f"a link named {name} exists and is not owned by vpcctl",
            )
        self.links_.pop(name, None)
        self.wg_.pop(name, None)
        self.routes_ = [r for r in self.routes_ if r.dev != name]

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        self._call("set_link")
        link = self._link("set link", name)
        self.links_[name] = replace(
            link, mtu=link.mtu if mtu is None else mtu, up=link.up if up is None else up
        )

    def add_address(self, name: str, address: IPv4Interface) -> None:
        self._call("add_address")
        link = self._link("add address", name)
        self.links_[name] = replace(link, addresses=tuple(sorted({*link.addresses, address})))

    def del_address(self, name: str, address: IPv4Interface) -> None:
        self._call("del_address")
        link = self.links_.get(name)
        if link is None:
            return  # like the kernel: an address of a missing link is already gone
        self.links_[name] = replace(
            link, addresses=tuple(a for a in link.addresses if a != address)
        )

    def add_route(self, route: Route) -> None:
        self._call("add_route")
        self._link("add route", route.dev)
        # NLM_F_REPLACE: one route per destination and table
        self.routes_ = [r for r in self.routes_ if (r.dst, r.table) != (route.dst, route.table)] + [
            route
        ]

    def del_route(self, route: Route) -> None:
        self._call("del_route")
        self.routes_ = [r for r in self.routes_ if r != route]

    def forwarding(self) -> bool:
        return self.fwd

    def set_forwarding(self, on: bool) -> None:
        self._call("set_forwarding")
        self.fwd = on

    def nft_list(self) -> str | None:
        return self.nft

    def nft_load(self, text: str) -> None:
        self._call("nft_load")
        self.nft = text

    def nft_delete(self) -> None:
        self._call("nft_delete")
        self.nft = None

    def resolve_endpoint(self, endpoint: str) -> str:
        """An IPv4 address passes; a name is looked up in ``names`` (as getaddrinfo would)."""
        host, _, port = endpoint.rpartition(":")
        if host.startswith("["):
            return endpoint
        try:
            IPv4Address(host)
            return endpoint
        except ValueError:
            pass
        if host not in self.names:
            raise KernelError(
                f"cannot resolve endpoint {endpoint}: [Errno -2] Name or service not known",
                "check the name or use an IP address",
            )
        return f"{self.names[host]}:{port}"

    @property
    def resolver(self) -> tuple[str, ...] | None:
        return self.procs.get("resolver.pid")

    def resolver_running(self, pidfile: Path) -> tuple[str, ...] | None:
        return self.procs.get(pidfile.name)

    def start_resolver(self, argv: tuple[str, ...], pidfile: Path, log: object) -> None:
        self._call("start_resolver" if pidfile.name == "resolver.pid" else "start_daemon")
        self.procs[pidfile.name] = argv

    def stop_resolver(self, pidfile: Path) -> None:
        self._call("stop_resolver" if pidfile.name == "resolver.pid" else "stop_daemon")
        self.procs.pop(pidfile.name, None)

    def close(self) -> None:
        pass
