"""Userspace WireGuard backend: wireguard-go driven over its UAPI unix socket.

The cross-platform configuration protocol (https://www.wireguard.com/xplatform/):
``get=1\\n\\n`` / ``set=1\\n<key=value lines>\\n\\n``, keys in hex, every answer
ending in ``errno=N\\n\\n``.  The pure parse/format functions are separate from
the socket I/O and unit-tested on their own.  Private keys are never logged and
never put in exception messages.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from vpcctl.core import run
from vpcctl.core.errors import KernelError
from vpcctl.core.keys import psk_digest
from vpcctl.host.wgtypes import (
    PeerConfig,
    PeerUpdate,
    WgDevice,
    WgPeer,
    check_private_key,
    hex_to_key,
    key_to_hex,
    normalize_endpoint,
    plan_peer_update,
    validate_ifname,
)

log = logging.getLogger(__name__)

SOCKET_DIR = Path("/var/run/wireguard")  # compiled into wireguard-go
LOG_DIR = Path("/run/vpcctl")
GET_REQUEST = "get=1\n\n"
DEFAULT_TIMEOUT = 5.0
HINT_INSTALL = "apt-get install wireguard-go or load the wireguard module"
# Environment wireguard-go reads that must not leak in from our own environment:
# they would make it skip daemonising or take over foreign file descriptors.
_WG_ENV_STRIP = ("WG_PROCESS_FOREGROUND", "WG_TUN_FD", "WG_UAPI_FD", "WG_TUN_NAME_FILE")


# ----------------------------------------------------------------------------- pure


def parse_errno(text: str) -> int:
    """The errno of a UAPI answer (0 = success).  Raises ValueError if there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith("errno="):
            return abs(int(line[len("errno=") :]))
    raise ValueError("UAPI answer without errno line")


@dataclass
class _UapiPeer:
    """Accumulates the lines of one peer of a ``get`` answer."""

    key: str
    endpoint: str | None = None
    sec: int = 0
    nsec: int = 0
    rx: int = 0
    tx: int = 0
    keepalive: int = 0
    allowed: list[IPv4Network | IPv6Network] = field(default_factory=list)
    psk: str | None = None

    def feed(self, key: str, value: str) -> None:
        if key == "endpoint":
            try:
                self.endpoint = normalize_endpoint(value)
            except ValueError:
                self.endpoint = value  # e.g. an IPv6 zone; keep verbatim
        elif key == "last_handshake_time_sec":
            self.sec = int(value)
        elif key == "last_handshake_time_nsec":
            self.nsec = int(value)
        elif key == "rx_bytes":
            self.rx = int(value)
        elif key == "tx_bytes":
            self.tx = int(value)
        elif key == "persistent_keepalive_interval":
            self.keepalive = int(value)
        elif key == "allowed_ip":
            self.allowed.append(ip_network(value, strict=False))
        elif key == "preshared_key":
            self.psk = psk_digest(bytes.fromhex(value))  # kept as a digest only
        # protocol_version and unknown keys are ignored

    def freeze(self) -> WgPeer:
        return WgPeer(
            public_key=self.key,
            endpoint=self.endpoint,
            allowed_ips=tuple(n for n in self.allowed if isinstance(n, IPv4Network)),
            keepalive=self.keepalive,
            last_handshake=(self.sec + self.nsec / 1e9) if (self.sec or self.nsec) else None,
            rx_bytes=self.rx,
            tx_bytes=self.tx,
            allowed_ips_v6=tuple(n for n in self.allowed if isinstance(n, IPv6Network)),
            psk_digest=self.psk,
        )


def parse_get(text: str, ifname: str) -> WgDevice:
    """Parse the full answer to ``get=1`` into a WgDevice.

    Derives the public key from private_key (never kept); IPv6 allowed ips go to
    WgPeer.allowed_ips_v6; unknown keys are ignored (forward compatible).
    """
    public_key: str | None = None
    listen_port = 0
    peers: dict[str, WgPeer] = {}
    cur: _UapiPeer | None = None
    status: int | None = None

    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise KernelError(
                f"read WireGuard device {ifname}: malformed UAPI line {lineno}",
                "is the socket really a wireguard-go UAPI socket?",
            )
        try:
            if key == "errno":
                status = abs(int(value))
            elif key == "private_key":
                raw = bytes.fromhex(value)
                if any(raw):
                    from nacl.bindings import crypto_scalarmult_base

                    public_key = hex_to_key(crypto_scalarmult_base(raw).hex())
            elif key == "listen_port" and cur is None:
                listen_port = int(value)
            elif key == "public_key":
                if cur is not None:
                    peers[cur.key] = cur.freeze()
                cur = _UapiPeer(key=hex_to_key(value))
            elif cur is not None:
                cur.feed(key, value)
        except ValueError as exc:
            # never echo the value: it may be key material
            raise KernelError(
                f"read WireGuard device {ifname}: bad value for {key!r} on UAPI line {lineno}",
                "wireguard-go answered something this version of vpcctl cannot parse",
            ) from exc
    if cur is not None:
        peers[cur.key] = cur.freeze()
    if status is None:
        raise KernelError(
            f"read WireGuard device {ifname}: truncated UAPI answer (no errno)",
            "wireguard-go closed the connection early; check its log",
        )
    if status != 0:
        raise _uapi_error("read WireGuard device", ifname, status)
    return WgDevice(
        name=ifname,
        public_key=public_key,
        listen_port=listen_port,
        peers=peers,
        backend="userspace",
    )


def format_set_device(*, private_key: bytes | None = None, listen_port: int | None = None) -> str:
    """``set=1`` request for device settings (private_key = raw 32 bytes)."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={check_private_key(private_key).hex()}")
    if listen_port is not None:
        if not 0 <= listen_port <= 65535:
            raise ValueError(f"listen_port {listen_port} out of range")
        lines.append(f"listen_port={listen_port}")
    return "\n".join(lines) + "\n\n"


def format_set_peer(update: PeerUpdate) -> str:
    """``set=1`` request for one peer update.

    ``update_only=true`` directly after ``public_key`` for an existing peer: the
    peer is updated in place (session, handshake and counters kept) and never
    recreated.  ``replace_allowed_ips=true`` precedes the full allowed-ip list
    only when an allowed ip must go; pure additions are sent without it.
    """
    lines = ["set=1", f"public_key={key_to_hex(update.public_key)}"]
    if not update.create:
        lines.append("update_only=true")
    if update.endpoint is not None:
        lines.append(f"endpoint={update.endpoint}")
    if update.keepalive is not None:
        lines.append(f"persistent_keepalive_interval={update.keepalive}")
    if update.preshared_key is not None:
        lines.append(f"preshared_key={update.preshared_key.raw.hex()}")
    if update.replace_allowed_ips:
        lines.append("replace_allowed_ips=true")
    lines.extend(f"allowed_ip={net}" for net in update.allowed_ips)
    return "\n".join(lines) + "\n\n"


def format_remove_peer(public_key: str) -> str:
    """``set=1`` request removing one peer (a no-op if it does not exist)."""
    return f"set=1\npublic_key={key_to_hex(public_key)}\nupdate_only=true\nremove=true\n\n"


def _uapi_error(op: str, ifname: str, code: int) -> KernelError:
    name = errno.errorcode.get(code, "?")
    hints = {
        errno.EADDRINUSE: "the UDP listen port is already in use; choose another listen_port",
        errno.EINVAL: "wireguard-go rejected a value (key, endpoint, port or allowed ip)",
        errno.EPROTO: "UAPI protocol error (version mismatch?)",
        errno.EIO: "wireguard-go had an I/O error; check its log",
    }
    return KernelError(
        f"{op} {ifname}: wireguard-go answered errno={code} ({name})", hints.get(code)
    )


# ------------------------------------------------------------------------------ I/O


def uapi_exchange(path: Path, request: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Send one UAPI request and return the full answer text (ends in errno=N).

    Raises OSError (FileNotFoundError, ConnectionRefusedError, TimeoutError, ...).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request.encode("ascii"))
        buf = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if buf.endswith(b"\n\n") and (buf.startswith(b"errno=") or b"\nerrno=" in buf):
                break
    return buf.decode("ascii", errors="replace")


class UserspaceWireGuard:
    """WireGuardBackend over wireguard-go (one daemon per device)."""

    name = "userspace"

    def __init__(
        self,
        *,
        binary: str = "wireguard-go",
        socket_dir: Path = SOCKET_DIR,
        log_dir: Path = LOG_DIR,
        log_level: str = "error",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.binary = binary
        self.socket_dir = Path(socket_dir)
        self.log_dir = Path(log_dir)
        self.log_level = log_level
        self.timeout = timeout

    def socket_path(self, ifname: str) -> Path:
        return self.socket_dir / f"{validate_ifname(ifname)}.sock"

    def log_path(self, ifname: str) -> Path:
        return self.log_dir / f"{validate_ifname(ifname)}.log"

    # ------------------------------------------------------------------ helpers

    def _exchange(self, op: str, ifname: str, request: str) -> str:
        path = self.socket_path(ifname)
        try:
            answer = uapi_exchange(path, request, timeout=self.timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise KernelError(
                f"{op} {ifname}: no userspace WireGuard device (no daemon on {path})",
                "create the device first; if it existed, wireguard-go died — see "
                f"{self.log_path(ifname)}",
            ) from exc
        except TimeoutError as exc:
            raise KernelError(
                f"{op} {ifname}: wireguard-go did not answer within {self.timeout:g}s",
                f"the daemon is stuck; see {self.log_path(ifname)}",
            ) from exc
        except OSError as exc:
            hint = "run as root" if exc.errno in (errno.EACCES, errno.EPERM) else None
            raise KernelError(f"{op} {ifname}: UAPI socket error: {exc.strerror}", hint) from exc
        return answer

    def _set(self, op: str, ifname: str, request: str) -> None:
        answer = self._exchange(op, ifname, request)
        try:
            code = parse_errno(answer)
        except ValueError as exc:
            raise KernelError(
                f"{op} {ifname}: truncated UAPI answer", "check the wireguard-go log"
            ) from exc
        if code != 0:
            raise _uapi_error(op, ifname, code)

    def _alive(self, ifname: str) -> bool:
        try:
            uapi_exchange(self.socket_path(ifname), GET_REQUEST, timeout=self.timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError as exc:
            log.debug("UAPI probe of %s failed: %s", ifname, exc)
            return False
        return True

    def _log_tail(self, ifname: str, limit: int = 400) -> str:
        try:
            data = self.log_path(ifname).read_bytes()[-4096:]
        except OSError:
            return ""
        lines = [
            ln.strip()
            for ln in data.decode("utf-8", errors="replace").splitlines()
            if ln.strip() and not ln.lstrip().startswith(("│", "┌", "└"))
        ]
        return " | ".join(lines)[-limit:]

    # ------------------------------------------------------------------ backend

    def exists(self, ifname: str) -> bool:
        """A wireguard-go daemon for ifname answers on its UAPI socket."""
        path = self.socket_path(ifname)
        if not path.exists():
            return False
        return self._alive(ifname)

    def create(self, ifname: str, *, mtu: int | None = None, alias: str | None = None) -> None:
        """Start a detached wireguard-go for ifname and wait (<= timeout) until it answers."""
        validate_ifname(ifname)
        binary = run.which(self.binary)
        if binary is None:
            raise KernelError(
                f"create WireGuard device {ifname}: {self.binary} not found on PATH", HINT_INSTALL
            )
        if self.exists(ifname):
            raise KernelError(
                f"create WireGuard device {ifname}: a wireguard-go daemon already serves it",
                f"a link named {ifname} exists and is not owned by vpcctl",
            )
        from vpcctl.host.netlink import Netlink

        with Netlink() as nl:
            if nl.link(ifname) is not None:
                raise KernelError(
                    f"create WireGuard device {ifname}: name taken",
                    f"a link named {ifname} exists and is not owned by vpcctl",
                )
        deadline = time.monotonic() + self.timeout
        self._spawn(ifname, binary, deadline)
        try:
            self._wait_ready(ifname, deadline)
            if mtu is not None or alias is not None:
                from vpcctl.host.netlink import Netlink

                with Netlink() as nl:
                    nl.set_link(ifname, mtu=mtu, alias=alias)
        except KernelError:
            self._stop(ifname)
            raise

    def _spawn(self, ifname: str, binary: str, deadline: float) -> None:
        """Run ``wireguard-go IFNAME``.

        wireguard-go creates the tun device and the UAPI socket, re-executes
        itself as a detached daemon and the first process exits; we wait for
        that exit (so there is no zombie and we know setup succeeded).  The daemon
        runs in its own session, so it outlives us and is immune to our terminal
        signals; its stdout/stderr (errors only, LOG_LEVEL) go to the log file.
        """
        env = {k: v for k, v in os.environ.items() if k not in _WG_ENV_STRIP}
        env["LOG_LEVEL"] = self.log_level
        # Old wireguard-go releases refuse to run on Linux without this.
        env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        log_path = self.log_path(ifname)
        log.info("starting %s for %s (log: %s)", binary, ifname, log_path)
        proc = run.spawn(
            [binary, ifname], log_path, env=env, what=f"create WireGuard device {ifname}",
            hint=HINT_INSTALL,
        )  # fmt: skip
        rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if rc is None:
            proc.kill()
            raise KernelError(
                f"create WireGuard device {ifname}: wireguard-go did not start within "
                f"{self.timeout:g}s",
                f"see {log_path}",
            )
        if rc != 0:
            tail = self._log_tail(ifname)
            raise KernelError(
                f"create WireGuard device {ifname}: wireguard-go exited with status {rc}"
                + (f": {tail}" if tail else ""),
                f"see {log_path}; /dev/net/tun and root are required",
            )

    def _wait_ready(self, ifname: str, deadline: float) -> None:
        while True:
            if self.socket_path(ifname).exists() and self._alive(ifname):
                return
            if time.monotonic() >= deadline:
                raise KernelError(
                    f"create WireGuard device {ifname}: UAPI socket "
                    f"{self.socket_path(ifname)} did not come up within {self.timeout:g}s",
                    f"see {self.log_path(ifname)}",
                )
            time.sleep(0.05)

    def _stop(self, ifname: str) -> None:
        """Best-effort cleanup after a failed create: drop the tun link (daemon exits)."""
        try:
            from vpcctl.host.netlink import Netlink

            with Netlink() as nl:
                link = nl.link(ifname)
                if link is not None and link.kind == "tun":
                    nl.delete_link(ifname)
        except KernelError as exc:
            log.warning("cleanup of half-created %s failed: %s", ifname, exc.message)

    def delete(self, ifname: str) -> None:
        """Remove the tun link; wireguard-go then exits and removes its socket."""
        path = self.socket_path(ifname)
        from vpcctl.host.netlink import Netlink

        with Netlink() as nl:
            link = nl.link(ifname)
            if link is not None:
                if link.kind != "tun":
                    raise KernelError(
                        f"delete WireGuard device {ifname}: it is a {link.kind or 'plain'} link",
                        f"a link named {ifname} exists and is not owned by vpcctl",
                    )
                nl.delete_link(ifname)
        deadline = time.monotonic() + self.timeout
        while path.exists():
            if not self._alive(ifname):
                # stale socket of a dead daemon: wireguard-go would reuse it anyway
                path.unlink(missing_ok=True)
                break
            if time.monotonic() >= deadline:
                raise KernelError(
                    f"delete WireGuard device {ifname}: wireguard-go still answers on {path}",
                    "its tun link is gone but the daemon did not exit; kill it",
                )
            time.sleep(0.05)

    def get(self, ifname: str) -> WgDevice:
        return parse_get(self._exchange("read WireGuard device", ifname, GET_REQUEST), ifname)

    def set_device(
        self, ifname: str, *, private_key: bytes | None = None, listen_port: int | None = None
    ) -> None:
        if private_key is None and listen_port is None:
            return
        request = format_set_device(private_key=private_key, listen_port=listen_port)
        self._set("configure WireGuard device", ifname, request)

    def set_peer(self, ifname: str, peer: PeerConfig) -> None:
        current = self.get(ifname).peers.get(peer.public_key)
        update = plan_peer_update(current, peer)
        if update is None:
            return
        self._set(f"set peer {peer.public_key[:8]}… on", ifname, format_set_peer(update))

    def update_peer(self, ifname: str, update: PeerUpdate) -> None:
        """Send a PeerUpdate computed from an earlier observation (no read first)."""
        self._set(f"set peer {update.public_key[:8]}… on", ifname, format_set_peer(update))

    def remove_peer(self, ifname: str, public_key: str) -> None:
        request = format_remove_peer(public_key)
        self._set(f"remove peer {public_key[:8]}… from", ifname, request)


__all__ = [
    "GET_REQUEST",
    "UserspaceWireGuard",
    "format_remove_peer",
    "format_set_device",
    "format_set_peer",
    "parse_errno",
    "parse_get",
    "uapi_exchange",
]
