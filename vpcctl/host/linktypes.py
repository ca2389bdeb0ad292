"""Observed kernel objects (links, routes) as pure values, shared by netlink.py and plan.py."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")  # the sysctl vpcctl sets (and reads back)
RT_TABLE_MAIN = 254
# Routes vpcctl installs carry this route protocol number (see /etc/iproute2/rt_protos); vpcctl
# only ever deletes routes that carry it.
RTPROT_VPCCTL = 211
# Links vpcctl owns carry the alias (IFLA_IFALIAS) "vpcctl:<mesh>"; it changes and removes only those.
ALIAS_PREFIX = "vpcctl:"


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str | None  # "bridge", "ipip", "wireguard", "veth", "tun", ...; None = plain
    mtu: int
    up: bool  # administratively up (IFF_UP)
    alias: str | None  # IFLA_IFALIAS
    master: str | None  # name of the master (bridge) device
    addresses: tuple[IPv4Interface, ...]  # sorted
    ipip_local: IPv4Address | None = None  # None also for 0.0.0.0 (any)
    ipip_remote: IPv4Address | None = None  # None for NBMA (remote 0.0.0.0)


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    dev: str
    via: IPv4Address | None = None
    onlink: bool = False
    proto: int = 0
    table: int = RT_TABLE_MAIN

    def __post_init__(self) -> None:
        if not isinstance(self.dst, IPv4Network):
            raise TypeError(f"route dst {self.dst!r} is not an IPv4Network")
        if self.via is not None and not isinstance(self.via, IPv4Address):
            raise TypeError(f"route via {self.via!r} is not an IPv4Address")
        if self.onlink and self.via is None:
            raise ValueError(f"route {self.dst}: onlink requires a gateway (via)")
        if not 0 <= self.proto <= 255:
            raise ValueError(f"route proto {self.proto} out of range 0..255")

    def __str__(self) -> str:
        via = f" via {self.via}" if self.via else ""
        onlink = " onlink" if self.onlink else ""
        return f"{self.dst}{via} dev {self.dev}{onlink} proto {self.proto}"
