"""Inventories and keys for tests, built through the pure ops (the same path the CLI takes)."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Network

from vpcctl.admin import edits
from vpcctl.core.keys import PrivateKey, clamp
from vpcctl.core.model import (
    DEFAULT_DOMAIN,
    DEFAULT_INTERFACE,
    DEFAULT_PORT,
    Inventory,
    PortSpec,
    SshTarget,
)


def private_key(seed: str) -> PrivateKey:
    """A deterministic private key (tests only): the same seed gives the same key."""
    return PrivateKey(clamp(hashlib.sha256(seed.encode()).digest()))


def public_key(seed: str) -> str:
    return private_key(seed).public_key()


def empty(
    mesh_cidr: str = "10.90.0.0/24",
    routing: str = "ipip",
    domain: str = DEFAULT_DOMAIN,
    name: str = "home",
) -> Inventory:
    return edits.new(
        name,
        IPv4Network(mesh_cidr),
        port=DEFAULT_PORT,
        interface=DEFAULT_INTERFACE,
        domain=domain,
        routing=routing,  # type: ignore[arg-type]
    )


def homelab(routing: str = "ipip") -> Inventory:
    """nas (behind NAT), vps1, vps2; VPCs prod and staging; a service in each.

    ``web-1`` exists in both VPCs on purpose: short names must resolve per VPC.
    """
    inv = empty(routing=routing)
    inv = edits.add_host(
        inv, "nas", SshTarget("nas.lan", "admin", 2222), public_key=public_key("nas")
    )
    for name, underlay in (("vps1", "203.0.113.10"), ("vps2", "198.51.100.20")):
        inv = edits.add_host(
            inv,
            name,
            SshTarget(underlay, "root"),
            endpoint=f"{underlay}:51820",
            public_key=public_key(name),
        )
    inv = edits.add_vpc(inv, "prod", IPv4Network("10.100.0.0/16"))
    inv = edits.add_vpc(inv, "staging", IPv4Network("10.200.0.0/16"))
    inv = edits.add_container(inv, "web-1", "prod", "nas")
    inv = edits.add_container(inv, "db-1", "prod", "vps1")
    inv = edits.add_container(inv, "db-2", "prod", "vps2")
    inv = edits.add_container(inv, "web-1", "staging", "vps1")
    inv = edits.add_container(inv, "cache-1", "staging", "vps2")
    inv = edits.add_service(
        inv,
        "db",
        "prod",
        (PortSpec(5432, "tcp", "postgres"), PortSpec(9187, "tcp")),
        ("db-1", "db-2"),
    )
    inv = edits.add_service(
        inv, "cache", "staging", (PortSpec(6379, "tcp", "redis"),), ("cache-1",)
    )
    return inv


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)
