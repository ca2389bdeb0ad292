"""The typed changes a plan is made of: pure values (their base and the Plan are in plans.py).

Most changes say what they do with a `text=` template over their fields (see plans.Change)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from vpcctl.host.plans import MANAGED as MANAGED
from vpcctl.host.plans import Change as Change
from vpcctl.host.plans import Plan as Plan

if TYPE_CHECKING:
    from vpcctl.host.linktypes import Route
    from vpcctl.host.wgtypes import PeerUpdate


@dataclass(frozen=True)
class SetForwarding(Change, text="set net.ipv4.ip_forward = {on:d}"):
    on: bool = True
    restore: bool = False  # `agent down`: back to the value recorded before vpcctl's first change

    def describe(self) -> str:
        if self.restore:
            return f"restore net.ipv4.ip_forward = {self.on:d} (its value before vpcctl)"
        return super().describe()


@dataclass(frozen=True)
class CreateWireGuard(Change):
    name: str
    backend: str
    mtu: int
    alias: str

    def describe(self) -> str:
        how = "kernel module" if self.backend == "kernel" else "wireguard-go"
        return f"create WireGuard interface {self.name} ({how}, mtu {self.mtu})"


@dataclass(frozen=True)
class CreateBridge(Change, text="create bridge {name} (mtu {mtu})"):
    name: str
    mtu: int
    alias: str


@dataclass(frozen=True)
class CreateTunnel(Change, text="create IPIP tunnel {name} (NBMA, local {local}, mtu {mtu})"):
    name: str
    local: IPv4Address
    mtu: int
    alias: str


@dataclass(frozen=True)
class DeleteLink(Change):
    name: str
    kind: str | None

    def describe(self) -> str:
        return f"delete {self.kind or 'link'} {self.name}"


@dataclass(frozen=True)
class SetLink(Change):
    name: str
    mtu: int | None = None
    up: bool | None = None

    def describe(self) -> str:
        parts = []
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        if self.up is not None:
            parts.append("up" if self.up else "down")
        return f"set {self.name} " + " ".join(parts)


@dataclass(frozen=True)
class AddAddress(Change, text="add address {address} to {dev}"):
    dev: str
    address: IPv4Interface


@dataclass(frozen=True)
class DelAddress(Change, text="remove address {address} from {dev}"):
    dev: str
    address: IPv4Interface


@dataclass(frozen=True)
class SetPrivateKey(Change, text="set private key of {dev} (public key {public_key})"):
    dev: str
    public_key: str  # the public half, for display; the agent reads the private key itself


@dataclass(frozen=True)
class SetListenPort(Change, text="set listen port of {dev} to {port}"):
    dev: str
    port: int


@dataclass(frozen=True)
class SetPeer(Change):
    dev: str
    name: str
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[IPv4Network, ...]
    keepalive: int
    new: bool
    update: PeerUpdate = field(compare=False, repr=False)  # the minimal in-place change

    def describe(self) -> str:
        verb = "add" if self.new else "update"
        ep = self.endpoint or "no endpoint (behind NAT)"
        ips = ", ".join(str(n) for n in self.allowed_ips)
        ka = f", keepalive {self.keepalive}s" if self.keepalive else ""
        psk = self.update.preshared_key
        key = "" if psk is None else ", preshared key set" if any(psk.raw) else ", no preshared key"
        return f"{verb} peer {self.name} on {self.dev}: {ep}, allowed {ips}{ka}{key}"


@dataclass(frozen=True)
class RemovePeer(Change, text="remove peer {public_key} from {dev}"):
    dev: str
    public_key: str


@dataclass(frozen=True)
class AddRoute(Change, text="add route {route}"):
    route: Route


@dataclass(frozen=True)
class DelRoute(Change, text="delete route {route}"):
    route: Route


@dataclass(frozen=True)
class LoadFirewall(Change, text="load nftables table inet vpcctl (sha256 {digest:.12})"):
    digest: str
    text: str = field(repr=False)


@dataclass(frozen=True)
class DeleteFirewall(Change, text="delete nftables table inet vpcctl"):
    pass


@dataclass(frozen=True)
class WriteZone(Change, text="write resolver zone ({records} names)"):
    records: int
    text: str = field(repr=False)


@dataclass(frozen=True)
class StartResolver(Change):
    argv: tuple[str, ...]

    def describe(self) -> str:
        listen = [a for i, a in enumerate(self.argv) if i and self.argv[i - 1] == "--listen"]
        return f"start the resolver on {', '.join(listen)}"


@dataclass(frozen=True)
class StopResolver(Change, text="stop the resolver"):
    pass


@dataclass(frozen=True)
class StartDaemon(Change, text="start the agent daemon (mesh table)"):
    argv: tuple[str, ...]


@dataclass(frozen=True)
class StopDaemon(Change, text="stop the agent daemon"):
    pass
