"""WireGuard value types shared by the kernel and the userspace backend.

Pure values and pure helpers only: no I/O, no pyroute2.  Keys are always
standard base64 strings (44 characters) in these types; private keys never
appear in any of them.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from vpcctl.core.keys import PresharedKey
from vpcctl.core.model import KEY_LEN, ifname_problem, key_bytes, split_endpoint

BackendName = Literal["kernel", "userspace"]


# --------------------------------------------------------------------------- keys


def normalize_key(key: str | bytes) -> str:
    """Return the canonical base64 form of a WireGuard key.

    Accepts base64 (str or bytes, 44 chars) or the raw 32 bytes.  Raises
    ValueError for anything else (the key itself is never put in the message).
    """
    if isinstance(key, bytes) and len(key) == KEY_LEN:
        return b64encode(key).decode("ascii")
    text = key.decode("ascii", errors="replace") if isinstance(key, bytes) else key
    try:
        raw = key_bytes(text)
    except ValueError as exc:
        raise ValueError(f"WireGuard key is {exc}") from None
    return b64encode(raw).decode("ascii")


def key_to_hex(key: str) -> str:
    """base64 key -> lowercase hex (the UAPI wire form)."""
    return b64decode(normalize_key(key)).hex()


def hex_to_key(hexkey: str) -> str:
    """UAPI hex key -> base64 key."""
    try:
        raw = bytes.fromhex(hexkey.strip())
    except ValueError as exc:
        raise ValueError("WireGuard key is not valid hex") from exc
    if len(raw) != KEY_LEN:
        raise ValueError(f"WireGuard key must be {KEY_LEN} bytes, got {len(raw)}")
    return b64encode(raw).decode("ascii")


def check_private_key(raw: bytes) -> bytes:
    """Validate a raw private key (32 bytes).  The key never appears in errors."""
    if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_LEN:
        raise ValueError(f"private key must be the raw {KEY_LEN} bytes")
    return bytes(raw)


def validate_ifname(name: str) -> str:
    """Validate a Linux interface name (1..15 chars, no '/', ':' or whitespace)."""
    problem = ifname_problem(name)
    if problem is not None:
        raise ValueError(f"invalid interface name {name!r}: {problem}")
    return name


# ---------------------------------------------------------------------- endpoints


def parse_endpoint(endpoint: str) -> tuple[IPv4Address | IPv6Address, int]:
    """Parse "1.2.3.4:51820" or "[2001:db8::1]:51820" (IP literals only)."""
    try:
        host, port_s = split_endpoint(endpoint.strip())
    except ValueError:
        raise ValueError(f"invalid endpoint {endpoint!r}: expected ip:port") from None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or host.startswith("["):
        raise ValueError(f"invalid endpoint {endpoint!r}: expected ip:port or [ipv6]:port")
    try:
        addr = ip_address(host)
        port = int(port_s)
    except ValueError as exc:
        raise ValueError(f"invalid endpoint {endpoint!r}") from exc
    if not 0 < port < 65536:
        raise ValueError(f"invalid endpoint {endpoint!r}: port out of range")
    return addr, port


def format_endpoint(addr: IPv4Address | IPv6Address | str, port: int) -> str:
    """Canonical endpoint text: "1.2.3.4:51820" / "[2001:db8::1]:51820"."""
    ip = ip_address(addr) if isinstance(addr, str) else addr
    if not 0 < port < 65536:
        raise ValueError(f"endpoint port {port} out of range")
    if isinstance(ip, IPv6Address):
        return f"[{ip.compressed}]:{port}"
    return f"{ip}:{port}"


def normalize_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    return format_endpoint(*parse_endpoint(endpoint))


def _sorted_v4(nets: Iterable[IPv4Network]) -> tuple[IPv4Network, ...]:
    out = set()
    for net in nets:
        if not isinstance(net, IPv4Network):
            raise TypeError(f"allowed ip {net!r} is not an IPv4Network")
        out.add(net)
    return tuple(sorted(out))


# ------------------------------------------------------------------------- values


@dataclass(frozen=True)
class WgPeer:
    """A peer as observed on a device."""

    public_key: str  # base64, 44 chars
    endpoint: str | None  # "1.2.3.4:51820" / "[::1]:51820"; None if unknown
    allowed_ips: tuple[IPv4Network, ...]  # sorted, de-duplicated
    keepalive: int  # seconds, 0 = off
    last_handshake: float | None  # unix seconds; None = never
    rx_bytes: int
    tx_bytes: int
    # IPv6 allowed ips are not managed by vpcctl; they are reported separately so
    # that set_peer() can notice and replace them.
    allowed_ips_v6: tuple[IPv6Network, ...] = ()
    psk_digest: str | None = None  # digest of its preshared key (core.keys.psk_digest); None: none

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_ips", _sorted_v4(self.allowed_ips))
        object.__setattr__(self, "allowed_ips_v6", tuple(sorted(set(self.allowed_ips_v6))))


@dataclass(frozen=True)
class WgDevice:
    """A WireGuard device as observed.  Never carries the private key."""

    name: str
    public_key: str | None  # None when no private key is configured
    listen_port: int
    peers: Mapping[str, WgPeer]  # keyed by base64 public key
    backend: str  # "kernel" | "userspace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", MappingProxyType(dict(self.peers)))


@dataclass(frozen=True)
class PeerConfig:
    """A desired peer.  Key and endpoint are normalised on construction."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[IPv4Network, ...]
    keepalive: int = 0
    preshared_key: PresharedKey | None = None  # None: no preshared key

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", normalize_key(self.public_key))
        object.__setattr__(self, "endpoint", normalize_endpoint(self.endpoint))
        object.__setattr__(self, "allowed_ips", _sorted_v4(self.allowed_ips))
        if not 0 <= self.keepalive <= 65535:
            raise ValueError(f"keepalive {self.keepalive} out of range 0..65535")


@dataclass(frozen=True)
class PeerUpdate:
    """The minimal change that brings one peer to a PeerConfig.

    Both backends translate it 1:1: ``create`` False means the request carries
    update_only (never (re)creates a peer, so a concurrently removed peer is not
    resurrected with partial settings); ``replace_allowed_ips`` means "drop the
    peer's allowed ips first, then add ``allowed_ips``"; otherwise
    ``allowed_ips`` are only added.  None fields are left untouched.
    """

    public_key: str
    create: bool
    endpoint: str | None = None
    keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: tuple[IPv4Network, ...] = field(default=())
    preshared_key: PresharedKey | None = None  # all zero clears it; repr never shows it


def plan_peer_update(current: WgPeer | None, desired: PeerConfig) -> PeerUpdate | None:
    """Compute the minimal in-place update, or None when the peer already matches.

    - new peer: create with everything (replace_allowed_ips set as a guard);
    - existing peer: only changed fields; allowed ips are *added* when the
      current set is a subset of the desired one (no window without a route),
      otherwise replaced (replace_allowed_ips + full list).
    - an endpoint can be set but never cleared (neither WireGuard API can clear
      it), so desired.endpoint None leaves the current endpoint alone.
    """
    want_psk = desired.preshared_key.digest() if desired.preshared_key is not None else None
    if current is None:
        return PeerUpdate(
            public_key=desired.public_key,
            create=True,
            endpoint=desired.endpoint,
            keepalive=desired.keepalive,
            replace_allowed_ips=True,
            allowed_ips=desired.allowed_ips,
            preshared_key=desired.preshared_key if want_psk is not None else None,
        )
    if normalize_key(current.public_key) != desired.public_key:
        raise ValueError("current and desired peer have different public keys")
    endpoint = (
        desired.endpoint
        if desired.endpoint is not None and desired.endpoint != current.endpoint
        else None
    )
    keepalive = desired.keepalive if desired.keepalive != current.keepalive else None
    have, want = set(current.allowed_ips), set(desired.allowed_ips)
    replace = False
    add: tuple[IPv4Network, ...] = ()
    if current.allowed_ips_v6 or not have <= want:
        replace, add = True, desired.allowed_ips
    elif have != want:
        add = tuple(sorted(want - have))
    psk = None
    if current.psk_digest != want_psk:
        psk = desired.preshared_key if want_psk is not None else PresharedKey.none()
    if endpoint is None and keepalive is None and not replace and not add and psk is None:
        return None
    return PeerUpdate(
        public_key=desired.public_key,
        create=False,
        endpoint=endpoint,
        keepalive=keepalive,
        replace_allowed_ips=replace,
        allowed_ips=add,
        preshared_key=psk,
    )


# ----------------------------------------------------------------------- protocol


@runtime_checkable
class WireGuardBackend(Protocol):
    """What the agent drives.  Every failure raises vpcctl.core.errors.KernelError."""

    name: str  # "kernel" | "userspace"

    def exists(self, ifname: str) -> bool: ...

    def create(self, ifname: str, *, mtu: int | None = None, alias: str | None = None) -> None:
        """Create the device (link down, no keys).  mtu/alias are optional extras."""
        ...

    def delete(self, ifname: str) -> None: ...

    def get(self, ifname: str) -> WgDevice: ...

    def set_device(
        self, ifname: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        """private_key is the raw 32 bytes."""
        ...

    def set_peer(self, ifname: str, peer: PeerConfig) -> None:
        """Add or update one peer in place; replaces its allowed ips; no other peer touched."""
        ...

    def update_peer(self, ifname: str, update: PeerUpdate) -> None:
        """Send a PeerUpdate computed from an earlier observation, without reading first."""
        ...

    def remove_peer(self, ifname: str, public_key: str) -> None: ...
