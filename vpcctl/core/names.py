"""Every name vpcctl derives, in one pure place, and the rules that keep them apart.

Kernel names (README "Names"): on every host vpcctl owns

* the WireGuard interface: the mesh's ``interface`` (the user's choice, default ``vpc0``);
* the IPIP tunnel that goes with it: ``<interface>-ipip`` (the interface cut to 10 characters);
* one bridge per VPC: ``vb-<vpc>``, shortened to 15 characters (IFNAMSIZ - 1) with a checksum
  of the full VPC name when it does not fit (``vb-productio-3f2a``).

Docker network names are not kernel names (no length limit) and live in Docker's own namespace:
``vpc-<vpc>`` for every VPC.

None of these may equal another one, or a name the system or a common neighbour uses
(:data:`RESERVED`, :data:`RESERVED_PATTERNS`): two VPCs whose shortened bridge names match are
refused (rename one), never silently put on one bridge. Names are derived from the name alone,
never from what else exists, so that adding a VPC never renames another VPC's bridge.

DNS name limits: every name the zone holds (``NAME.VPC.DOMAIN``, ``_PORT._PROTO.NAME.VPC.DOMAIN``,
``HOST.DOMAIN``) must fit in 253 octets of text (255 on the wire) with labels of at most 63.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator

MAX_IFNAME = 15  # IFNAMSIZ (16) less the terminating NUL
MAX_FQDN = 253  # 255 octets on the wire: length bytes and the root label
MAX_LABEL = 63

BRIDGE_PREFIX = "vb-"
TUNNEL_SUFFIX = "-ipip"
DOCKER_NETWORK_PREFIX = "vpc-"

# Names the kernel, its modules or common neighbours create or expect on a host. ``tunl0``,
# ``sit0``, ``gre0``... appear as soon as the ipip/sit/gre modules load; ``all`` and ``default``
# are the sysctl directories under /proc/sys/net/ipv4/conf; ``wg0`` is wg-quick's usual interface.
RESERVED = frozenset(
    {
        "lo",
        "all",
        "default",
        "docker0",
        "docker_gwbridge",
        "podman0",
        "cni0",
        "cilium_host",
        "flannel.1",
        "virbr0",
        "lxcbr0",
        "lxdbr0",
        "tunl0",
        "sit0",
        "gre0",
        "gretap0",
        "erspan0",
        "ip_vti0",
        "ip6_vti0",
        "ip6tnl0",
        "ip6gre0",
        "wg0",
        "bond0",
    }
)
# Name families that belong to someone else: NICs (eth0, wlan0, ens3, enp0s3...), Docker's veths
# and user-network bridges (veth1a2b3c, br-0123456789ab), libvirt's vnetN.
RESERVED_PATTERNS = (
    re.compile(r"(eth|wlan|wlp|wwan|ens|eno|enp|enx|vnet)[0-9][0-9a-z]*\Z"),
    re.compile(r"veth.*\Z"),
    re.compile(r"br-.*\Z"),
)


def reserved(name: str) -> bool:
    """A name vpcctl must never give one of its own interfaces."""
    return name in RESERVED or any(p.match(name) for p in RESERVED_PATTERNS)


def owned_family(name: str) -> str | None:
    """Which derived family ``name`` looks like (``"bridge"`` / ``"tunnel"``), if any: a name the
    user chooses must not look like one vpcctl derives, or a later VPC could take it."""
    if name.startswith(BRIDGE_PREFIX):
        return "bridge"
    if name.endswith(TUNNEL_SUFFIX):
        return "tunnel"
    return None


def _short(prefix: str, name: str) -> str:
    """``prefix + name`` if it fits in 15 characters, else a cut with a stable checksum."""
    full = prefix + name
    if len(full) <= MAX_IFNAME:
        return full
    digest = f"{zlib.crc32(name.encode()) & 0xFFFF:04x}"
    return full[: MAX_IFNAME - 5] + "-" + digest


def bridge_name(vpc: str) -> str:
    """The Linux bridge of a VPC on every host, e.g. ``vb-prod``."""
    return _short(BRIDGE_PREFIX, vpc)


def tunnel_name(interface: str) -> str:
    """The IPIP tunnel that goes with WireGuard interface ``interface``, e.g. ``vpc0-ipip``."""
    return interface[: MAX_IFNAME - len(TUNNEL_SUFFIX)] + TUNNEL_SUFFIX


def docker_network_name(vpc: str) -> str:
    """The Docker network of a VPC on every host, e.g. ``vpc-prod`` (on bridge ``vb-prod``)."""
    return DOCKER_NETWORK_PREFIX + vpc


def kernel_names(interface: str, vpcs: Iterable[str]) -> list[tuple[str, str]]:
    """Every kernel name vpcctl derives on a host, as ``(name, what)``, in a stable order."""
    out = [(interface, "the WireGuard interface"), (tunnel_name(interface), "the IPIP tunnel")]
    out += [(bridge_name(v), f"the bridge of VPC {v}") for v in sorted(vpcs)]
    return out


def collisions(interface: str, vpcs: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """``(name, what, other)`` for each derived name that another derived name or the reserved
    set already has (``other`` says who has it)."""
    seen: dict[str, str] = {}
    for name, what in kernel_names(interface, vpcs):
        if reserved(name):
            yield name, what, "a system interface name"
        elif name in seen:
            yield name, what, seen[name]
        else:
            seen[name] = what


# ---------------------------------------------------------------------------------------------
# DNS names


def too_long(name: str) -> str | None:
    """Why ``name`` (text, no trailing dot) cannot be a DNS name, or None when it can."""
    if len(name) > MAX_FQDN:
        return f"{len(name)} characters, over the DNS limit of {MAX_FQDN}"
    long_label = next((label for label in name.split(".") if len(label) > MAX_LABEL), None)
    if long_label is not None:
        return f"a label of {len(long_label)} characters, over the DNS limit of {MAX_LABEL}"
    return None


def under_reverse_tree(domain: str) -> bool:
    """``arpa`` and everything under it (``in-addr.arpa``, ``ip6.arpa``) belongs to reverse DNS."""
    return domain == "arpa" or domain.endswith(".arpa")
