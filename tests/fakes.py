"""A fake System (the agent's kernel adapter) for fast tests and failure injection.

It implements the same protocol as vpcctl.host.kernel.LinuxSystem, in memory."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from vpcctl.core.errors import KernelError
from vpcctl.core.keys import PrivateKey
from vpcctl.host.linktypes import Link, Route
from vpcctl.host.wgtypes import PeerUpdate, WgDevice, WgPeer


class FakeSystem:
    def __init__(self, backend: str = "userspace") -> None:
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

    @property
    def resolver(self) -> tuple[str, ...] | None:
        return self.procs.get("resolver.pid")

    # helpers -------------------------------------------------------------------------------
    def _call(self, name: str, *args: object) -> None:
        self.calls.append(name)
        if name in self.fail_always:
            raise KernelError(self.fail_always[name], "injected failure")
        if name in self.fail_on:
            raise KernelError(self.fail_on.pop(name), "injected failure")

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
        return list(self.routes_)

    def detect_backend(self) -> str:
        return self.backend

    def wg_get(self, name: str, kind: str | None) -> WgDevice | None:
        d = self.wg_.get(name)
        if d is None:
            return None
        key = d["key"]
        return WgDevice(
            name=name,
            public_key=PrivateKey(key).public_key() if isinstance(key, bytes) else None,
            listen_port=int(d["port"]),  # type: ignore[call-overload]
            peers=dict(d["peers"]),  # type: ignore[call-overload]
            backend=self.backend,
        )

    def wg_create(self, name: str, backend: str, mtu: int, alias: str) -> None:
        self._call("wg_create")
        self._index += 1
        kind = "wireguard" if backend == "kernel" else "tun"
        self.links_[name] = Link(name, self._index, kind, mtu, False, alias, None, ())
        self.wg_[name] = {"key": None, "port": 0, "peers": {}}

    def wg_set_device(
        self, name: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        self._call("wg_set_device")
        if private_key is not None:
            self.wg_[name]["key"] = private_key
        if listen_port is not None:
            self.wg_[name]["port"] = listen_port

    def wg_update_peer(self, name: str, update: PeerUpdate) -> None:
        self._call("wg_set_peer")
        peers = self.wg_[name]["peers"]
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
            tuple(ips),
            update.keepalive if update.keepalive is not None else (old.keepalive if old else 0),
            None,
            0,
            0,
        )

    def wg_remove_peer(self, name: str, public_key: str) -> None:
        self._call("wg_remove_peer")
        peers = self.wg_[name]["peers"]
        assert isinstance(peers, dict)
        peers.pop(public_key, None)

    def add_bridge(self, name: str, mtu: int, alias: str) -> None:
        self._call("add_bridge")
        if name in self.links_:
            raise KernelError(f"{name} exists", None)
        self._index += 1
        self.links_[name] = Link(name, self._index, "bridge", mtu, False, alias, None, ())

    def add_ipip(self, name: str, local: object, mtu: int, alias: str) -> None:
        self._call("add_ipip")
        assert isinstance(local, IPv4Address)
        self._index += 1
        self.links_[name] = Link(name, self._index, "ipip", mtu, False, alias, None, (), local)

    def delete_link(self, name: str, kind: str | None) -> None:
        self._call("delete_link")
        self.links_.pop(name, None)
        self.wg_.pop(name, None)
        self.routes_ = [r for r in self.routes_ if r.dev != name]

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        self._call("set_link")
        link = self.links_[name]
        self.links_[name] = replace(
            link, mtu=link.mtu if mtu is None else mtu, up=link.up if up is None else up
        )

    def add_address(self, name: str, address: IPv4Interface) -> None:
        self._call("add_address")
        link = self.links_[name]
        self.links_[name] = replace(link, addresses=tuple(sorted({*link.addresses, address})))

    def del_address(self, name: str, address: IPv4Interface) -> None:
        self._call("del_address")
        link = self.links_[name]
        self.links_[name] = replace(
            link, addresses=tuple(a for a in link.addresses if a != address)
        )

    def add_route(self, route: Route) -> None:
        self._call("add_route")
        if route.dev not in self.links_:
            raise KernelError(f"no device {route.dev}", None)
        self.routes_ = [r for r in self.routes_ if r.dst != route.dst] + [route]

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
        return endpoint

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
