"""The host's kernel as one adapter: what the agent observes and the changes it applies.

:class:`System` is the protocol the agent talks to; :class:`LinuxSystem` implements it with the
edges (netlink.py for rtnetlink and kernel WireGuard, wguapi.py for wireguard-go, firewall.Nft
for nftables, /proc for sysctls). Tests pass a fake System that implements the same protocol.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Protocol

from vpcctl.core.errors import KernelError
from vpcctl.core.model import split_endpoint
from vpcctl.host.linktypes import FORWARDING, Link, Route
from vpcctl.host.wgtypes import PeerUpdate, WgDevice, WireGuardBackend


class System(Protocol):
    def links(self) -> dict[str, Link]: ...
    def routes(self) -> list[Route]: ...  # every main-table IPv4 route (ours: RTPROT_VPCCTL)
    def detect_backend(self) -> str: ...
    def wg_get(self, name: str, kind: str | None) -> WgDevice | None: ...
    def wg_create(self, name: str, backend: str, mtu: int, alias: str) -> None: ...
    def wg_set_device(
        self, name: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None: ...
    def wg_update_peer(self, name: str, update: PeerUpdate) -> None: ...
    def wg_remove_peer(self, name: str, public_key: str) -> None: ...
    def add_bridge(self, name: str, mtu: int, alias: str) -> None: ...
    def add_ipip(self, name: str, local: object, mtu: int, alias: str) -> None: ...
    def delete_link(self, name: str, kind: str | None) -> None: ...
    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None: ...
    def add_address(self, name: str, address: IPv4Interface) -> None: ...
    def del_address(self, name: str, address: IPv4Interface) -> None: ...
    def add_route(self, route: Route) -> None: ...
    def del_route(self, route: Route) -> None: ...
    def forwarding(self) -> bool: ...
    def set_forwarding(self, on: bool) -> None: ...
    def nft_list(self) -> str | None: ...
    def nft_load(self, text: str) -> None: ...
    def nft_delete(self) -> None: ...
    def resolve_endpoint(self, endpoint: str) -> str: ...
    def resolver_running(self, pidfile: Path) -> tuple[str, ...] | None: ...
    def start_resolver(self, argv: tuple[str, ...], pidfile: Path, log: Path) -> None: ...
    def stop_resolver(self, pidfile: Path) -> None: ...
    def close(self) -> None: ...


class LinuxSystem:
    """The real thing. One rtnetlink socket for the whole run."""

    def __init__(self, prefer_backend: str | None = None) -> None:
        from vpcctl.host.firewall import Nft
        from vpcctl.host.netlink import Netlink

        self._nl = Netlink()
        self._nft = Nft()
        self._prefer = prefer_backend
        self._detected: str | None = None
        self._backends: dict[str, WireGuardBackend] = {}
        self._links: dict[str, Link] | None = None  # the last observation, for route names
        self._wg_kind: dict[str, str] = {}  # interface -> backend, learnt while observing

    def close(self) -> None:
        self._nl.close()

    def _backend(self, name: str) -> WireGuardBackend:
        if name not in self._backends:
            if name == "kernel":
                from vpcctl.host.netlink import KernelWireGuard

                self._backends[name] = KernelWireGuard()
            else:
                from vpcctl.host.wguapi import UserspaceWireGuard

                self._backends[name] = UserspaceWireGuard()
        return self._backends[name]

    def links(self) -> dict[str, Link]:
        self._links = self._nl.links()
        return self._links

    def routes(self) -> list[Route]:
        links = self._links if self._links is not None else self.links()
        return self._nl.routes(links=links)

    def detect_backend(self) -> str:
        if self._detected is None:
            from vpcctl.host.wireguard import detect_backend

            self._detected = detect_backend(self._prefer).name
        return self._detected

    def wg_get(self, name: str, kind: str | None) -> WgDevice | None:
        backend = {"wireguard": "kernel", "tun": "userspace"}.get(kind or "")
        if backend is None:
            return None
        self._wg_kind[name] = backend
        b = self._backend(backend)
        if not b.exists(name):
            return None
        return b.get(name)

    def _wg_for(self, name: str) -> WireGuardBackend:
        if name not in self._wg_kind:
            link = self._nl.link(name)
            if link is None:
                raise KernelError(f"WireGuard interface {name} does not exist", "re-run the apply")
            self._wg_kind[name] = "kernel" if link.kind == "wireguard" else "userspace"
        return self._backend(self._wg_kind[name])

    def wg_create(self, name: str, backend: str, mtu: int, alias: str) -> None:
        self._backend(backend).create(name, mtu=mtu, alias=alias)
        self._wg_kind[name] = backend

    def wg_set_device(
        self, name: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        self._wg_for(name).set_device(name, private_key=private_key, listen_port=listen_port)

    def wg_update_peer(self, name: str, update: PeerUpdate) -> None:
        self._wg_for(name).update_peer(name, update)

    def wg_remove_peer(self, name: str, public_key: str) -> None:
        self._wg_for(name).remove_peer(name, public_key)

    def add_bridge(self, name: str, mtu: int, alias: str) -> None:
        self._nl.add_bridge(name, mtu=mtu, alias=alias)

    def add_ipip(self, name: str, local: object, mtu: int, alias: str) -> None:
        from ipaddress import IPv4Address

        assert isinstance(local, IPv4Address)
        self._nl.add_ipip(name, local=local, mtu=mtu, alias=alias)

    def delete_link(self, name: str, kind: str | None) -> None:
        self._wg_kind.pop(name, None)
        if kind == "tun":
            self._backend("userspace").delete(name)
        else:
            self._nl.delete_link(name)

    def set_link(self, name: str, *, mtu: int | None = None, up: bool | None = None) -> None:
        self._nl.set_link(name, mtu=mtu, up=up)

    def add_address(self, name: str, address: IPv4Interface) -> None:
        self._nl.add_address(name, address)

    def del_address(self, name: str, address: IPv4Interface) -> None:
        self._nl.del_address(name, address)

    def add_route(self, route: Route) -> None:
        self._nl.add_route(route)

    def del_route(self, route: Route) -> None:
        self._nl.del_route(route)

    def forwarding(self) -> bool:
        try:
            return FORWARDING.read_text().strip() == "1"
        except OSError as exc:
            raise KernelError(
                f"cannot read {FORWARDING}: {exc.strerror}", "is /proc mounted?"
            ) from None

    def set_forwarding(self, on: bool) -> None:
        try:
            FORWARDING.write_text("1\n" if on else "0\n")
        except OSError as exc:
            raise KernelError(f"cannot write {FORWARDING}: {exc.strerror}", "run as root") from None

    def nft_list(self) -> str | None:
        return self._nft.list_table()

    def nft_load(self, text: str) -> None:
        self._nft.load(text)

    def nft_delete(self) -> None:
        self._nft.delete()

    def resolver_running(self, pidfile: Path) -> tuple[str, ...] | None:
        from vpcctl.host import processes

        return processes.running(pidfile)

    def start_resolver(self, argv: tuple[str, ...], pidfile: Path, log: Path) -> None:
        from vpcctl.host import processes

        processes.start(argv, pidfile, log)

    def stop_resolver(self, pidfile: Path) -> None:
        from vpcctl.host import processes

        processes.stop(pidfile)

    def resolve_endpoint(self, endpoint: str) -> str:
        host, port = split_endpoint(endpoint)
        if host.startswith("["):
            return endpoint
        try:
            socket.inet_aton(host)
            if host.count(".") == 3:
                return endpoint
        except OSError:
            pass
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise KernelError(
                f"cannot resolve endpoint {endpoint}: {exc}", "check the name or use an IP address"
            ) from None
        return f"{infos[0][4][0]}:{port}"
