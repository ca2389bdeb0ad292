"""The typed changes a plan is made of: pure values (their base and the Plan are in plans.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

from vpcctl.host.plans import MANAGED as MANAGED
from vpcctl.host.plans import Change as Change
from vpcctl.host.plans import Plan as Plan

if TYPE_CHECKING:
    from vpcctl.host.linktypes import Route
    from vpcctl.host.wgtypes import PeerUpdate


@dataclass(frozen=True)
class SetForwarding(Change):
    on: bool = True

    def describe(self) -> str:
        return f"set net.ipv4.ip_forward = {int(self.on)}"


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
class CreateBridge(Change):
    name: str
    mtu: int
    alias: str

    def describe(self) -> str:
        return f"create bridge {self.name} (mtu {self.mtu})"


@dataclass(frozen=True)
class CreateTunnel(Change):
    name: str
    local: IPv4Address
    mtu: int
    alias: str

    def describe(self) -> str:
        return f"create IPIP tunnel {self.name} (NBMA, local {self.local}, mtu {self.mtu})"


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
class AddAddress(Change):
    dev: str
    address: IPv4Interface

    def describe(self) -> str:
        return f"add address {self.address} to {self.dev}"


@dataclass(frozen=True)
class DelAddress(Change):
    dev: str
    address: IPv4Interface

    def describe(self) -> str:
        return f"remove address {self.address} from {self.dev}"


@dataclass(frozen=True)
class SetPrivateKey(Change):
    dev: str
    public_key: str  # the public half, for display; the agent reads the private key itself

    def describe(self) -> str:
        return f"set private key of {self.dev} (public key {self.public_key})"


@dataclass(frozen=True)
class SetListenPort(Change):
    dev: str
    port: int

    def describe(self) -> str:
        return f"set listen port of {self.dev} to {self.port}"


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

    def to_json(self) -> dict[str, Any]:
        # not asdict(): the update carries the preshared key, which must not even be copied
        from dataclasses import fields

        from vpcctl.host.plans import _jsonable

        data = {
            f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "update"
        }
        return {"op": type(self).__name__, **data, "text": self.describe()}


@dataclass(frozen=True)
class RemovePeer(Change):
    dev: str
    public_key: str

    def describe(self) -> str:
        return f"remove peer {self.public_key} from {self.dev}"


@dataclass(frozen=True)
class AddRoute(Change):
    route: Route

    def describe(self) -> str:
        return f"add route {self.route}"


@dataclass(frozen=True)
class DelRoute(Change):
    route: Route

    def describe(self) -> str:
        return f"delete route {self.route}"


@dataclass(frozen=True)
class LoadFirewall(Change):
    digest: str
    text: str = field(repr=False)

    def describe(self) -> str:
        return f"load nftables table inet vpcctl (sha256 {self.digest[:12]})"

    def to_json(self) -> dict[str, Any]:
        return {"op": "LoadFirewall", "digest": self.digest, "text": self.describe()}


@dataclass(frozen=True)
class DeleteFirewall(Change):
    def describe(self) -> str:
        return "delete nftables table inet vpcctl"


@dataclass(frozen=True)
class WriteZone(Change):
    records: int
    text: str = field(repr=False)

    def describe(self) -> str:
        return f"write resolver zone ({self.records} names)"

    def to_json(self) -> dict[str, Any]:
        return {"op": "WriteZone", "records": self.records, "text": self.describe()}


@dataclass(frozen=True)
class StartResolver(Change):
    argv: tuple[str, ...]

    def describe(self) -> str:
        listen = [a for i, a in enumerate(self.argv) if i and self.argv[i - 1] == "--listen"]
        return f"start the resolver on {', '.join(listen)}"


@dataclass(frozen=True)
class StopResolver(Change):
    def describe(self) -> str:
        return "stop the resolver"


@dataclass(frozen=True)
class StartDaemon(Change):
    argv: tuple[str, ...]

    def describe(self) -> str:
        return "start the agent daemon (mesh table)"


@dataclass(frozen=True)
class StopDaemon(Change):
    def describe(self) -> str:
        return "stop the agent daemon"
