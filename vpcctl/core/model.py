"""Typed, validated values: names, CIDRs, endpoints, keys, and the inventory objects.

Everything here is pure. Parsing functions take the raw value and a ``where`` string (the file and
key, or the command-line option) so that every error names exactly what is wrong, and raise
:class:`~vpcctl.core.errors.ValidationError` with a hint. No value that passes these checks can carry a
newline, ``=``, ``[``, ``#`` or any other character that could inject a line into a rendered
configuration file.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    NetmaskValueError,
)
from pathlib import Path
from typing import Literal

from vpcctl.core.errors import ValidationError
from vpcctl.core.names import MAX_FQDN, under_reverse_tree

SCHEMA_VERSION = 1
Routing = Literal["ipip", "wireguard"]
ROUTINGS: tuple[Routing, ...] = ("ipip", "wireguard")
Proto = Literal["tcp", "udp"]

DEFAULT_MESH_CIDR = "10.90.0.0/24"
DEFAULT_PORT = 51820
DEFAULT_INTERFACE = "vpc0"
DEFAULT_DOMAIN = "vpc.internal"
DEFAULT_SLICE_PREFIX = 24
# "hostmaster.DOMAIN" (the SOA mailbox) is the shortest name the zone always holds under DOMAIN
MAX_DOMAIN = MAX_FQDN - len("hostmaster.")
DEFAULT_ROUTING: Routing = "ipip"
KEEPALIVE_SECONDS = 25
# The agent daemon (`vpcctl agent run`, README "Mesh table"): the TCP port it serves this host's
# endpoint set on (mesh address only, accepted only from the WireGuard interface), and how long a
# peer that stopped answering keeps its records before they expire.
DAEMON_PORT = 51821
DEFAULT_GRACE = 5

# Each host keeps vpcctl's secrets and history in one state directory (host/state.py derives every
# path from it); the resolver reads its zone from there too.
DEFAULT_STATE_DIR = Path("/etc/vpcctl")
STATE_DIR_ENV = "VPCCTL_STATE_DIR"
ZONE_FILE = "zone.json"

# MTU arithmetic (README "MTU"): a 1500-byte underlay carries WireGuard with at most 80 bytes of
# overhead (IPv6 outer header 40 + UDP 8 + WireGuard 32), so the WireGuard interface gets 1420.
# IPIP inside it adds a 20-byte IPv4 header, so the tunnel, the VPC bridges and containers get 1400.
UNDERLAY_MTU = 1500
WIREGUARD_OVERHEAD = 80
IPIP_OVERHEAD = 20
WG_MTU = UNDERLAY_MTU - WIREGUARD_OVERHEAD
VPC_MTU = WG_MTU - IPIP_OVERHEAD
# `mtu` in [mesh] (`vpcctl mesh set --mtu`) replaces WG_MTU for an underlay that is not 1500:
# underlay MTU - 80. 1280 is WireGuard's floor (IPv6's minimum), 9000 a jumbo-frame underlay's.
MTU_MIN, MTU_MAX = 1280, 9000


def vpc_mtu(wg_mtu: int, routing: str) -> int:
    """The MTU of the tunnel, the VPC bridges and containers: IPIP inside WireGuard costs 20."""
    return wg_mtu - IPIP_OVERHEAD if routing == "ipip" else wg_mtu


# Every pattern ends in \Z, never $: "$" also matches before a trailing newline, which would let
# "db\n" through and inject a line into a rendered config.
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}\Z")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
# Docker's label-key guideline: lower-case alphanumerics, '.' and '-', beginning and ending with
# an alphanumeric, no two separators in a row ("com.example.app", "app", "tier").
_LABEL_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|[.-](?=[a-z0-9]))*\Z")
LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 255
_PORTSPEC_RE = re.compile(
    r"^(?:([a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?)=)?([0-9]{1,5})(?:/(tcp|udp))?\Z"
)


# ---------------------------------------------------------------------------------------------
# the one reading of a key, an endpoint and an interface name; every side parses through these

KEY_LEN = 32
MAX_IFNAME_LEN = 15  # IFNAMSIZ - 1


def key_bytes(text: str) -> bytes:
    """The 32 bytes of a WireGuard key written in base64 (surrounding whitespace allowed).
    ValueError "not valid base64" or "not 32 bytes"; the key itself is never in the message."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"not {KEY_LEN} bytes")
    return raw


def split_endpoint(text: str) -> tuple[str, str]:
    """``HOST:PORT`` -> (HOST, PORT text), split at the last colon; HOST keeps the brackets of
    ``[IPv6]``. ValueError when there is no colon. Each caller checks the parts it accepts."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("not HOST:PORT")
    return host, port


def ifname_problem(name: str) -> str | None:
    """What makes ``name`` unusable as a Linux interface name, or None: 1 to 15 characters, not
    "." or "..", no "/", ":", whitespace or unprintable characters."""
    if not 0 < len(name) <= MAX_IFNAME_LEN or name in (".", ".."):
        return f"must be 1..{MAX_IFNAME_LEN} chars"
    if any(c in name for c in "/:") or any(c.isspace() for c in name) or not name.isprintable():
        return "no '/', ':', whitespace or control characters"
    return None


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²" or "١", which ``int`` rejects."""
    return text.isascii() and text.isdigit()


def _fail(where: str, problem: str, hint: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}", hint)


def _shown(value: object) -> str:
    """A value quoted for an error message, with control characters made visible."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# scalar parsers


def parse_label(value: object, where: str, what: str = "name") -> str:
    """A DNS label: a-z, 0-9 and '-', 1 to 63 characters, no leading or trailing '-'."""
    if not isinstance(value, str) or not _LABEL_RE.match(value):
        raise _fail(
            where,
            f"{_shown(value)} is not a valid {what}",
            "use a DNS label: a-z, 0-9 and '-', at most 63 characters, "
            "not starting or ending with '-'",
        )
    return value


def parse_domain(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(
            where, f"{_shown(value)} is not a domain", 'use dotted DNS labels, e.g. "vpc.internal"'
        )
    labels = value.rstrip(".").split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        raise _fail(
            where,
            f"{_shown(value)} is not a valid domain",
            'use dotted DNS labels (a-z, 0-9, "-"), e.g. "vpc.internal"',
        )
    domain = ".".join(labels)
    if len(domain) > MAX_DOMAIN:
        raise _fail(
            where,
            f"domain of {len(domain)} characters is too long",
            f"use at most {MAX_DOMAIN} characters: container and service names go in front of it "
            "and a DNS name holds at most 253",
        )
    if under_reverse_tree(domain):
        raise _fail(
            where,
            f"{_shown(value)} is under .arpa, the reverse-DNS tree",
            'the resolver answers PTR queries there itself: use e.g. "vpc.internal"',
        )
    return domain


def parse_ifname(value: object, where: str) -> str:
    """An interface name vpcctl creates: a Linux interface name (:func:`ifname_problem`) made of
    the characters that are safe in every config file and command line (A-Z a-z 0-9 _ . -)."""
    if not isinstance(value, str) or ifname_problem(value) or not _IFNAME_RE.match(value):
        raise _fail(
            where,
            f"{_shown(value)} is not a valid interface name",
            "use 1 to 15 characters from A-Z a-z 0-9 _ . - (Linux limit: 15)",
        )
    return value


def parse_port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(
            where, f"{_shown(value)} is not a port number", "use an integer from 1 to 65535"
        )
    return value


METRICS_HINT = (
    'use "127.0.0.1:9586" (loopback), "mesh:9586" (this host\'s mesh address) or "off"; '
    "metrics are never served on other addresses"
)


def parse_metrics(value: object, where: str) -> str | None:
    """Where the agent daemon serves Prometheus metrics: ``127.x.y.z:PORT``, ``mesh:PORT`` (the
    host's mesh address) or ``off`` (None). Never a wildcard or another address."""
    if value == "off":
        return None
    if not isinstance(value, str) or value.count(":") != 1:
        raise _fail(where, f"{_shown(value)} is not ADDRESS:PORT", METRICS_HINT)
    addr, _, port = value.partition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _fail(where, f"{_shown(value)}: bad port", METRICS_HINT)
    if addr != "mesh":
        try:
            ip = IPv4Address(addr)
        except ValueError:
            raise _fail(where, f"{_shown(value)} is not ADDRESS:PORT", METRICS_HINT) from None
        if not ip.is_loopback:
            raise _fail(where, f"{_shown(value)}: {addr} is not loopback", METRICS_HINT)
    return f"{addr}:{int(port)}"


def parse_int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(
            where, f"{_shown(value)} is out of range", f"use an integer from {low} to {high}"
        )
    return value


def parse_network(value: object, where: str) -> IPv4Network:
    if not isinstance(value, str):
        raise _fail(
            where, f"{_shown(value)} is not a CIDR", 'write it as a string, e.g. "10.100.0.0/16"'
        )
    try:
        net = IPv4Network(value, strict=True)
    except (AddressValueError, NetmaskValueError, ValueError) as exc:
        hint = 'use an IPv4 CIDR such as "10.100.0.0/16"'
        try:
            loose = IPv4Network(value, strict=False)
            hint = f'host bits are set: did you mean "{loose}"?'
        except ValueError:
            pass
        raise _fail(where, f"{_shown(value)} is not a valid IPv4 CIDR ({exc})", hint) from None
    if "/" not in value:
        raise _fail(where, f"{_shown(value)} has no prefix length", f'write it as "{value}/NN"')
    return net


# Ranges no mesh, VPC or service range may touch (README "Addressing"): "this network" (which holds
# the unspecified address), loopback, link-local, multicast and the reserved 240/4 (broadcast).
UNUSABLE_RANGES: tuple[tuple[IPv4Network, str], ...] = (
    (IPv4Network("0.0.0.0/8"), "the unspecified / this-network range"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved (and broadcast)"),
)
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not private, not public either


def parse_range(value: object, where: str) -> IPv4Network:
    """A mesh, VPC or service range: a CIDR that routing can actually use."""
    net = parse_network(value, where)
    if net.prefixlen == 0:
        raise _fail(
            where,
            f"{net} is every IPv4 address",
            'use a private range, e.g. "10.100.0.0/16"',
        )
    for bad, what in UNUSABLE_RANGES:
        if net.overlaps(bad):
            raise _fail(
                where,
                f"{net} overlaps {bad}, {what}",
                'use a private range (10/8, 172.16/12, 192.168/16), e.g. "10.100.0.0/16"',
            )
    return net


def is_public(net: IPv4Network) -> bool:
    """Not private and not shared (CGNAT): traffic meant for the internet would be routed in."""
    return not (net.is_private or net.subnet_of(_SHARED))


def parse_address(value: object, where: str) -> IPv4Address:
    if not isinstance(value, str):
        raise _fail(
            where,
            f"{_shown(value)} is not an IPv4 address",
            'write it as a string, e.g. "10.90.0.1"',
        )
    try:
        return IPv4Address(value)
    except (AddressValueError, ValueError):
        raise _fail(
            where,
            f"{_shown(value)} is not a valid IPv4 address",
            'use dotted quad, e.g. "10.90.0.1"',
        ) from None


def _parse_hostpart(host: str, where: str, original: object) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            # ipaddress accepts any text as a scope id after "%": allow interface names only
            scope = host[1:-1].partition("%")[2]
            if scope and not _IFNAME_RE.match(scope):
                raise ValueError(scope)
            ip6 = IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(
                where,
                f"{_shown(original)} has an invalid IPv6 address",
                "write IPv6 as [2001:db8::1]",
            ) from None
        if ip6.is_unspecified or ip6.is_multicast:
            raise _fail(
                where,
                f"{_shown(original)}: {ip6} is not the address of one machine",
                "use the address others reach the host at",
            )
        return host
    if _HOSTNAME_RE.match(host):
        if _is_number(host.rstrip(".").rpartition(".")[2]):
            # no top-level domain is all digits: this is meant as an IPv4 address, and
            # getaddrinfo would read "1.2.3" as 1.2.0.3
            try:
                ip = IPv4Address(host)
            except ValueError:
                raise _fail(
                    where,
                    f"{_shown(original)} has an invalid IPv4 address",
                    'write all four parts in decimal, e.g. "203.0.113.10"',
                ) from None
            if ip.is_unspecified or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
                raise _fail(
                    where,
                    f"{_shown(original)}: {ip} is not the address of one machine",
                    "use the address others reach the host at",
                )
        return host
    raise _fail(
        where, f"{_shown(original)} has an invalid host name", "use a DNS name or an IP address"
    )


def parse_endpoint(value: object, where: str) -> str:
    """``HOST:PORT`` where HOST is a DNS name, an IPv4 address or ``[IPv6]``."""
    hint = 'use HOST:PORT, e.g. "203.0.113.10:51820" or "[2001:db8::1]:51820"'
    if not isinstance(value, str) or ":" not in value:
        raise _fail(where, f"{_shown(value)} is not a HOST:PORT endpoint", hint)
    host, port_text = split_endpoint(value)
    if not _is_number(port_text) or not host:
        raise _fail(where, f"{_shown(value)} is not a HOST:PORT endpoint", hint)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _fail(where, f"{_shown(value)} has port {port} out of range", hint)
    _parse_hostpart(host, where, value)
    return f"{host}:{port}"


def parse_agent(value: object, where: str) -> str:
    """The command that runs vpcctl on a host (e.g. ``sudo -n /opt/vpcctl/bin/vpcctl``)."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise _fail(where, "empty or unprintable command", 'e.g. --agent "sudo -n vpcctl"')
    return value


@dataclass(frozen=True, slots=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        text = self.host
        if self.user:
            text = f"{self.user}@{text}"
        if self.port is not None:
            text = f"{text}:{self.port}"
        return text


def parse_ssh(value: object, where: str) -> SshTarget:
    """``[USER@]HOST[:PORT]``; HOST may be an ~/.ssh/config alias, a DNS name, IPv4 or [IPv6]."""
    hint = 'use [USER@]HOST[:PORT], e.g. "root@203.0.113.10" or "admin@nas.lan:2222"'
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{_shown(value)} is not an SSH target", hint)
    user: str | None = None
    rest = value
    if "@" in value:
        user, _, rest = value.rpartition("@")
        if not _USER_RE.match(user):
            raise _fail(where, f"{_shown(value)} has an invalid user name", hint)
    port: int | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close == -1:
            raise _fail(where, f"{_shown(value)} has an unclosed '['", hint)
        host, tail = rest[: close + 1], rest[close + 1 :]
        if tail:
            if not tail.startswith(":") or not _is_number(tail[1:]):
                raise _fail(where, f"{_shown(value)} is not an SSH target", hint)
            port = int(tail[1:])
    elif ":" in rest:
        host, _, port_text = rest.rpartition(":")
        if not _is_number(port_text):
            raise _fail(where, f"{_shown(value)} has a non-numeric port", hint)
        port = int(port_text)
    else:
        host = rest
    if port is not None and not 1 <= port <= 65535:
        raise _fail(where, f"{_shown(value)} has port {port} out of range", hint)
    _parse_hostpart(host, where, value)
    return SshTarget(host=host, user=user, port=port)


def parse_public_key(value: object, where: str) -> str:
    """A WireGuard public key: standard base64 of exactly 32 bytes (44 characters)."""
    hint = "paste the output of `wg pubkey` / `vpcctl agent keygen` (44 base64 characters)"
    if not isinstance(value, str) or len(value) != 44 or not value.endswith("="):
        raise _fail(where, f"{_shown(value)} is not a WireGuard public key", hint)
    try:
        raw = key_bytes(value)
    except ValueError as exc:
        problem = "is not valid base64" if "base64" in str(exc) else "is not a WireGuard public key"
        raise _fail(where, f"{_shown(value)} {problem}", hint) from None
    if base64.b64encode(raw).decode() != value:
        raise _fail(where, f"{_shown(value)} is not a WireGuard public key", hint)
    if raw == bytes(32):
        raise _fail(where, "the all-zero key is not a WireGuard public key", hint)
    return value


@dataclass(frozen=True, slots=True, order=True)
class PortSpec:
    port: int
    proto: Proto = "tcp"
    name: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.name}=" if self.name else ""
        return f"{prefix}{self.port}/{self.proto}"


def parse_portspec(value: object, where: str) -> PortSpec:
    """``[NAME=]PORT[/tcp|udp]``, e.g. ``postgres=5432/tcp``; protocol defaults to tcp."""
    hint = 'use [NAME=]PORT[/tcp|udp], e.g. "postgres=5432/tcp" or "53/udp"'
    if not isinstance(value, str):
        raise _fail(where, f"{_shown(value)} is not a port spec", hint)
    match = _PORTSPEC_RE.match(value)
    if not match:
        raise _fail(where, f"{_shown(value)} is not a port spec", hint)
    name, number, proto = match.groups()
    port = int(number)
    if not 1 <= port <= 65535:
        raise _fail(where, f"{_shown(value)}: port {port} out of range", hint)
    return PortSpec(port=port, proto="udp" if proto == "udp" else "tcp", name=name)


Selector = tuple[tuple[str, str], ...]  # container label key = value pairs, sorted, keys unique


def parse_label_key(value: object, where: str) -> str:
    """A container label key as Docker's guideline has it: ``app``, ``com.example.tier``."""
    if not isinstance(value, str) or len(value) > LABEL_KEY_MAX or not _LABEL_KEY_RE.match(value):
        raise _fail(
            where,
            f"{_shown(value)} is not a valid label key",
            "use lower-case a-z, 0-9, '.' and '-' (Docker's convention), starting and ending "
            f"with a letter or digit, at most {LABEL_KEY_MAX} characters, e.g. app or com.example.tier",
        )
    return value


def parse_label_value(value: object, where: str) -> str:
    """A container label value: any printable text without control characters, at most 255."""
    if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX or not value.isprintable():
        raise _fail(
            where,
            f"{_shown(value)} is not a valid label value",
            f"use printable text without control characters, at most {LABEL_VALUE_MAX} characters",
        )
    return value


def parse_selector_term(value: object, where: str) -> tuple[str, str]:
    """``KEY=VALUE`` (as given to ``--selector``); the value may be empty or contain '='."""
    if not isinstance(value, str) or "=" not in value:
        raise _fail(
            where,
            f"{_shown(value)} is not KEY=VALUE",
            "select containers by label, e.g. --selector app=db (repeat it to AND several)",
        )
    key, _, text = value.partition("=")
    return parse_label_key(key, where), parse_label_value(text, where)


def make_selector(terms: Iterable[tuple[str, str]], where: str) -> Selector:
    """Validated terms -> a canonical selector (sorted by key). The terms are ANDed, so one key
    with two different values could never match: that is refused; a repeated term is kept once."""
    out: dict[str, str] = {}
    for key, value in terms:
        parse_label_key(key, where)
        parse_label_value(value, where)
        if key in out and out[key] != value:
            raise _fail(
                where,
                f"label {key!r} selected as both {out[key]!r} and {value!r}",
                "the terms of a selector are ANDed: give each label once",
            )
        out[key] = value
    return tuple(sorted(out.items()))


def selector_text(selector: Selector) -> str:
    """``app=db,tier=primary`` (for tables and messages)."""
    return ",".join(f"{k}={v}" for k, v in selector)


def selects(selector: Selector, labels: Iterable[tuple[str, str]]) -> bool:
    """Whether a container with ``labels`` matches: every term present with the same value. An
    empty selector selects nothing (a service without a selector has only declared backends)."""
    if not selector:
        return False
    have = dict(labels)
    return all(have.get(k) == v for k, v in selector)


# ---------------------------------------------------------------------------------------------
# the inventory objects


@dataclass(frozen=True, slots=True)
class Mesh:
    name: str
    cidr: IPv4Network
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    domain: str = DEFAULT_DOMAIN
    routing: Routing = "ipip"
    daemon: bool = False  # `vpcctl agent apply` starts (and keeps) the agent daemon
    daemon_port: int = DAEMON_PORT
    grace: int = DEFAULT_GRACE  # seconds
    mtu: int = WG_MTU  # of the WireGuard interface (README "MTU")
    metrics: str | None = None  # the daemon's Prometheus metrics: "127.0.0.1:9586", "mesh:9586"
    psk: bool = False  # a WireGuard preshared key per host pair, made and kept on the hosts


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    ssh: SshTarget
    address: IPv4Address
    endpoint: str | None = None
    public_key: str | None = None
    agent: str | None = None  # command that runs vpcctl on the host; None = "vpcctl"
    slices: Mapping[str, IPv4Network] = field(default_factory=dict)  # vpc name -> slice
    relay: str | None = None  # behind NAT: the host relaying to other NAT hosts (None = automatic)

    @property
    def behind_nat(self) -> bool:
        return self.endpoint is None


@dataclass(frozen=True, slots=True)
class Vpc:
    name: str
    cidr: IPv4Network
    slice_prefix: int
    services: IPv4Network  # the range service VIPs are allocated from


@dataclass(frozen=True, slots=True)
class Container:
    vpc: str
    name: str
    host: str
    ip: IPv4Address

    @property
    def key(self) -> str:
        return f"{self.vpc}/{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    vpc: str
    name: str
    vip: IPv4Address
    ports: tuple[PortSpec, ...]
    backends: tuple[str, ...]  # container names in the same VPC
    selector: Selector = ()  # running containers with these labels are backends too

    @property
    def key(self) -> str:
        return f"{self.vpc}/{self.name}"


@dataclass(frozen=True, slots=True)
class Client:
    """A roaming peer (laptop, phone) with no SSH: it dials ``via``, the gateway host (which has
    an endpoint), and reaches ``vpcs`` only. Its private key is never stored: only the public
    key and its mesh address (allocated from the top of the mesh CIDR, README "Roaming clients")."""

    name: str
    via: str
    address: IPv4Address
    public_key: str
    vpcs: tuple[str, ...]  # sorted, unique


@dataclass(frozen=True, slots=True)
class Inventory:
    mesh: Mesh
    hosts: Mapping[str, Host] = field(default_factory=dict)
    vpcs: Mapping[str, Vpc] = field(default_factory=dict)
    containers: Mapping[str, Container] = field(default_factory=dict)  # "vpc/name" -> Container
    services: Mapping[str, Service] = field(default_factory=dict)  # "vpc/name" -> Service
    clients: Mapping[str, Client] = field(default_factory=dict)
    version: int = SCHEMA_VERSION


def gateway(slice_: IPv4Network) -> IPv4Interface:
    """The first usable address of a slice is its gateway, on the VPC bridge of that host."""
    return IPv4Interface(f"{slice_.network_address + 1}/{slice_.prefixlen}")


def docker_range(slice_: IPv4Network) -> IPv4Network | None:
    """The upper half of a slice: the addresses Docker allocates from (``--ip-range``).

    Declared containers (``vpc.toml``) get addresses from the lower half only (after the
    gateway), so an address Docker hands out can never collide with a declared one. None for
    slices too small to split (/30 and longer)."""
    if slice_.prefixlen >= 30:
        return None
    return IPv4Network((int(slice_.network_address) + (slice_.num_addresses // 2),
                        slice_.prefixlen + 1))  # fmt: skip


def split_key(key: str, where: str) -> tuple[str, str]:
    """``"vpc/name"`` -> ``("vpc", "name")``, both validated labels."""
    vpc, sep, name = key.partition("/")
    if not sep:
        raise _fail(
            where,
            f"{_shown(key)} is not VPC/NAME",
            'name containers and services "vpc/name", e.g. "prod/db-1"',
        )
    return parse_label(vpc, where, "VPC name"), parse_label(name, where)


def relays_of(inv: Inventory) -> dict[str, str]:
    """Host behind NAT -> the host that relays its traffic to the other hosts behind NAT (README
    "NAT to NAT"): its ``relay`` when that is a host with an endpoint and a key, else the first
    such host by name. A host with an endpoint needs none; without any candidate there is none."""
    dialable = sorted(n for n, h in inv.hosts.items() if h.endpoint and h.public_key)
    out: dict[str, str] = {}
    for name, h in inv.hosts.items():
        if h.endpoint is not None:
            continue
        if h.relay in dialable and h.relay != name:
            out[name] = h.relay
        elif dialable:
            out[name] = dialable[0]
    return out
