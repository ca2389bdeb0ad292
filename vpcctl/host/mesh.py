"""The mesh table: every host serves its own endpoint set; every peer watches every other host's.

No central server and no consensus: each host is the only writer of its own records. The daemon
(`vpcctl agent run`, :mod:`vpcctl.host.daemon`) serves this host's :class:`EndpointSet` on its
mesh address, TCP port ``DaemonSpec.port`` (vpcctl's nftables table accepts that port only from
the WireGuard interface), and watches the same port on every peer's mesh address.

Wire format (version 1): JSON lines. On connect the server sends the full set
``{"v": 1, "type": "set", "boot": B, "counter": N, "endpoints": [{vpc, name, address, labels,
ready}, ...]}``, then every new version as another full set (latest wins: nothing queues), and a
heartbeat ``{"v": 1, "type": "hb", "boot": B, "counter": N}`` every second. The client sends
nothing. A client reads with a timeout of a few heartbeats and reconnects with backoff.

Trust: only what WireGuard proves. The watcher dialled the peer's mesh address; WireGuard's
cryptokey routing only lets packets from that address arrive from the peer holding that key, so
the connection's remote address names the sender. Every record must lie in that sender's slice of
the record's VPC (``PeerSpec.slices``), in a VPC this host knows, with a valid DNS label as name
and bounded labels; anything else is rejected, counted and logged (rate-limited). Nothing in the
message (no host name, no claimed address) is ever believed.

Bounds: at most ``MAX_RECORDS`` records a set, ``MAX_LINE`` bytes a message, ``MAX_LABELS`` labels
a record; the server keeps no queue (each connection sends the newest set), serves each client
from its own thread with a send timeout, refuses connections from non-peers and more than
``MAX_CONNS_PER_PEER`` from one peer. One slow or hostile peer stalls nobody else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from vpcctl.core.endpoints import Endpoint, EndpointSet
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import parse_label
from vpcctl.core.spec import HostSpec, PeerSpec

PROTOCOL = 1
HEARTBEAT = 1.0  # seconds between heartbeats on an idle stream
READ_TIMEOUT = 3.0  # no line for this long: the peer is gone, reconnect
SEND_TIMEOUT = 3.0  # a client that does not read for this long is dropped
CONNECT_TIMEOUT = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0
MAX_RECORDS = 2048  # records in one set
MAX_LINE = 1 << 20  # bytes in one message
MAX_LABELS = 64  # labels on one record
MAX_LABEL_KEY, MAX_LABEL_VALUE = 255, 1024
MAX_CONNS_PER_PEER = 2
LOG_EVERY = 10.0  # at most one log line per peer and reason in this many seconds

log = logging.getLogger("vpcctl.mesh")


# ---------------------------------------------------------------------------------------------
# codec and validation (pure)


def encode_set(s: EndpointSet) -> bytes:
    return (
        json.dumps(
            {
                "v": PROTOCOL,
                "type": "set",
                "boot": s.boot,
                "counter": s.counter,
                "endpoints": [
                    {
                        "vpc": e.vpc,
                        "name": e.name,
                        "address": str(e.address),
                        "labels": dict(e.labels),
                        "ready": e.ready,
                    }
                    for e in s.endpoints
                ],
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def encode_heartbeat(boot: str, counter: int) -> bytes:
    msg = {"v": PROTOCOL, "type": "hb", "boot": boot, "counter": counter}
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class ProtocolError(Exception):
    """The whole message is unusable (the connection is dropped)."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # "set" or "hb"
    boot: str
    counter: int
    records: tuple[object, ...] = ()


def decode(line: bytes) -> Message:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message over {MAX_LINE} bytes")
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not JSON") from None
    if not isinstance(raw, dict) or raw.get("v") != PROTOCOL:
        raise ProtocolError("not a vpcctl mesh message (version 1)")
    kind, boot, counter = raw.get("type"), raw.get("boot"), raw.get("counter")
    if kind not in ("set", "hb"):
        raise ProtocolError(f"unknown message type {str(kind)[:20]!r}")
    if not isinstance(boot, str) or not 0 < len(boot) <= 64:
        raise ProtocolError("bad boot id")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 1 << 63:
        raise ProtocolError("bad counter")
    if kind == "hb":
        return Message("hb", boot, counter)
    records = raw.get("endpoints")
    if not isinstance(records, list):
        raise ProtocolError("endpoints is not a list")
    if len(records) > MAX_RECORDS:
        raise ProtocolError(f"{len(records)} records (at most {MAX_RECORDS})")
    return Message("set", boot, counter, tuple(records))


def slices_of(peer: PeerSpec) -> dict[str, tuple[IPv4Network, ...]]:
    out: dict[str, list[IPv4Network]] = {}
    for vpc, net in peer.slices:
        out.setdefault(vpc, []).append(net)
    return {k: tuple(v) for k, v in out.items()}


class Rejected(ValueError):
    """One record refused; ``kind`` groups reasons for counting and rate-limited logging."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_record(
    raw: object, host: str, slices: Mapping[str, tuple[IPv4Network, ...]], vpcs: frozenset[str]
) -> Endpoint:
    """One announced record, validated against what the sender may announce; raises
    :class:`Rejected` with the reason."""
    if not isinstance(raw, dict):
        raise Rejected("shape", "record is not an object")
    vpc, name, address = raw.get("vpc"), raw.get("name"), raw.get("address")
    labels, ready = raw.get("labels", {}), raw.get("ready", True)
    try:
        vpc = parse_label(vpc, "vpc", "VPC name")
        name = parse_label(name, "name")
    except ValidationError as exc:
        raise Rejected("name", exc.message) from None
    if vpc not in vpcs:
        raise Rejected("vpc", f"unknown VPC {vpc!r}")
    if not isinstance(address, str):
        raise Rejected("address", "address is not a string")
    try:
        ip = IPv4Address(address)
    except ValueError:
        raise Rejected("address", f"{address[:40]!r} is not an IPv4 address") from None
    own = slices.get(vpc, ())
    if not any(ip in net for net in own):
        raise Rejected("slice", f"{ip} is outside {host}'s slice of VPC {vpc}")
    if any(ip in (net.network_address, net.network_address + 1, net.broadcast_address)
           for net in own):  # fmt: skip
        raise Rejected("slice", f"{ip} is a network, gateway or broadcast address")
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise Rejected("labels", f"labels must be an object of at most {MAX_LABELS} entries")
    pairs = []
    for k, v in labels.items():
        if not isinstance(v, str) or not 0 < len(k) <= MAX_LABEL_KEY or len(v) > MAX_LABEL_VALUE:
            raise Rejected("labels", "a label key or value is not a string of bounded length")
        pairs.append((k, v))
    if not isinstance(ready, bool):
        raise Rejected("ready", "ready is not true or false")
    return Endpoint(host=host, vpc=vpc, name=name, address=ip, labels=tuple(sorted(pairs)),
                    ready=ready)  # fmt: skip


def check_set(
    records: Iterable[object],
    host: str,
    slices: Mapping[str, tuple[IPv4Network, ...]],
    vpcs: frozenset[str],
) -> tuple[tuple[Endpoint, ...], list[Rejected]]:
    """The valid records (first of each (vpc, name) and of each address) and the rejections."""
    good: list[Endpoint] = []
    bad: list[Rejected] = []
    names: set[tuple[str, str]] = set()
    addrs: set[IPv4Address] = set()
    for raw in records:
        try:
            e = check_record(raw, host, slices, vpcs)
        except Rejected as exc:
            bad.append(exc)
            continue
        if (e.vpc, e.name) in names or e.address in addrs:
            bad.append(Rejected("duplicate", f"duplicate {e.vpc}/{e.name} or {e.address}"))
            continue
        names.add((e.vpc, e.name))
        addrs.add(e.address)
        good.append(e)
    return tuple(sorted(good, key=lambda e: (e.vpc, e.name))), bad


def own_slices(spec: HostSpec) -> dict[str, tuple[IPv4Network, ...]]:
    return {v.name: (v.slice,) for v in spec.vpcs}


def known_vpcs(spec: HostSpec) -> frozenset[str]:
    return frozenset(v.name for v in spec.dns.vpcs) | {v.name for v in spec.vpcs}


class RateLimitedLog:
    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def warn(self, who: str, reason: str, message: str) -> None:
        key = (who, reason)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.every:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            n = self._suppressed.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 4096:  # bounded: forget the oldest half
                for k in sorted(self._last, key=self._last.__getitem__)[:2048]:
                    self._last.pop(k, None)
        log.warning("%s%s", message, f" ({n} more suppressed)" if n else "")


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class PeerState:
    name: str
    address: IPv4Address
    connected: bool = False
    last_seen: float | None = None  # monotonic
    last_seen_wall: float | None = None
    boot: str | None = None
    counter: int | None = None
    endpoints: tuple[Endpoint, ...] = ()
    expired: bool = True
    rejected: int = 0
    errors: int = 0
    last_error: str | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": str(self.address),
            "reachable": self.connected and not self.expired,
            "connected": self.connected,
            "last_seen": self.last_seen_wall,
            "last_seen_age": None if self.last_seen is None else round(now - self.last_seen, 2),
            "version": None if self.boot is None else f"{self.boot}:{self.counter}",
            "records": len(self.endpoints),
            "expired": self.expired,
            "rejected": self.rejected,
            "errors": self.errors,
            "last_error": self.last_error,
        }


class Table:
    """Peers' endpoint sets as received (validated), with expiry. Thread-safe."""

    def __init__(self, grace: float, on_change: Callable[[], None]) -> None:
        self.grace = grace
        self.on_change = on_change
        self.peers: dict[str, PeerState] = {}
        self.lock = threading.Lock()

    def set_peers(self, peers: Iterable[PeerSpec]) -> None:
        with self.lock:
            want = {p.name: p for p in peers}
            changed = any(self.peers[n].endpoints for n in self.peers if n not in want)
            for n in [n for n in self.peers if n not in want]:
                del self.peers[n]
            for n, p in want.items():
                old = self.peers.get(n)
                if old is None or old.address != p.address:
                    self.peers[n] = PeerState(name=n, address=p.address)
                    changed = changed or bool(old and old.endpoints)
        if changed:
            self.on_change()

    def seen(self, name: str, connected: bool = True) -> None:
        with self.lock:
            st = self.peers.get(name)
            if st is not None:
                st.connected = connected
                if connected:
                    st.last_seen, st.last_seen_wall = time.monotonic(), time.time()

    def disconnected(self, name: str, error: str | None) -> None:
        with self.lock:
            st = self.peers.get(name)
            if st is not None:
                st.connected = False
                if error:
                    st.errors += 1
                    st.last_error = error

    def update(
        self, name: str, boot: str, counter: int, endpoints: tuple[Endpoint, ...], rejected: int
    ) -> bool:
        """A new set from ``name``; False when it is not newer than what we hold."""
        with self.lock:
            st = self.peers.get(name)
            if st is None:
                return False
            st.rejected += rejected
            newer = st.boot != boot or st.counter is None or counter > st.counter
            if not newer and not st.expired:
                return False
            changed = st.expired or st.endpoints != endpoints
            st.boot, st.counter, st.endpoints, st.expired = boot, counter, endpoints, False
        if changed:
            self.on_change()
        return True

    def expire(self) -> list[str]:
        """Drop the sets of peers not heard from for longer than the grace."""
        now = time.monotonic()
        gone = []
        with self.lock:
            for st in self.peers.values():
                if st.expired:
                    continue
                if st.last_seen is None or now - st.last_seen > self.grace:
                    st.expired = True
                    if st.endpoints:
                        gone.append(st.name)
        if gone:
            self.on_change()
        return gone

    def live(self) -> tuple[Endpoint, ...]:
        with self.lock:
            return tuple(e for st in self.peers.values() if not st.expired for e in st.endpoints)

    def to_json(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self.lock:
            return [self.peers[n].to_json(now) for n in sorted(self.peers)]


# ---------------------------------------------------------------------------------------------
# server: this host's set, to every peer that watches it


class Publisher:
    """This host's current set; connections wait on it (latest wins, nothing queues)."""

    def __init__(self, host: str, boot: str) -> None:
        self.cond = threading.Condition()
        self.current = EndpointSet(host=host, boot=boot, counter=0)
        self._frame = encode_set(self.current)

    def publish(self, endpoints: tuple[Endpoint, ...]) -> bool:
        with self.cond:
            if endpoints == self.current.endpoints and self.current.counter:
                return False
            self.current = replace(
                self.current, counter=self.current.counter + 1, endpoints=endpoints
            )
            self._frame = encode_set(self.current)
            self.cond.notify_all()
            return True

    def frame(self) -> tuple[int, bytes]:
        with self.cond:
            return self.current.counter, self._frame

    def wait_newer(self, counter: int, timeout: float) -> tuple[int, bytes] | None:
        with self.cond:
            self.cond.wait_for(lambda: self.current.counter != counter, timeout)
            if self.current.counter == counter:
                return None
            return self.current.counter, self._frame


@dataclass
class ServerStats:
    accepted: int = 0
    refused: int = 0
    dropped_slow: int = 0
    active: dict[str, int] = field(default_factory=dict)


class Server:
    """Serves the publisher's set on ``(address, port)`` to the given peer addresses only."""

    def __init__(
        self,
        publisher: Publisher,
        address: IPv4Address,
        port: int,
        stop: threading.Event,
        limiter: RateLimitedLog,
    ) -> None:
        self.publisher, self.address, self.port, self.stop = publisher, address, port, stop
        self.limiter = limiter
        self.allowed: frozenset[str] = frozenset()
        self.stats = ServerStats()
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def set_allowed(self, peers: Iterable[PeerSpec]) -> None:
        self.allowed = frozenset(str(p.address) for p in peers)

    def bind(self) -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((str(self.address), self.port))
        except OSError as exc:
            s.close()
            self.limiter.warn("server", "bind", f"cannot listen on {self.address}:{self.port}: "
                              f"{exc.strerror} (retrying)")  # fmt: skip
            return False
        s.listen(64)
        s.settimeout(0.5)
        self.sock = s
        return True

    def serve(self) -> None:
        while not self.stop.is_set():
            if self.sock is None and not self.bind():
                self.stop.wait(1.0)
                continue
            assert self.sock is not None
            try:
                conn, (addr, _port) = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                self.limiter.warn("server", "accept", f"accept failed: {exc}")
                self.stop.wait(0.2)
                continue
            with self.lock:
                ok = addr in self.allowed and self.stats.active.get(addr, 0) < MAX_CONNS_PER_PEER
                if ok:
                    self.stats.accepted += 1
                    self.stats.active[addr] = self.stats.active.get(addr, 0) + 1
                else:
                    self.stats.refused += 1
            if not ok:
                self.limiter.warn(addr, "refused", f"refused a watch from {addr} (not a peer, "
                                  "or too many connections)")  # fmt: skip
                conn.close()
                continue
            threading.Thread(target=self._client, args=(conn, addr), daemon=True,
                             name=f"mesh-serve-{addr}").start()  # fmt: skip
        if self.sock is not None:
            self.sock.close()

    def _client(self, conn: socket.socket, addr: str) -> None:
        try:
            conn.settimeout(SEND_TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            counter, frame = self.publisher.frame()
            conn.sendall(frame)
            while not self.stop.is_set():
                newer = self.publisher.wait_newer(counter, HEARTBEAT)
                if newer is None:
                    conn.sendall(encode_heartbeat(self.publisher.current.boot, counter))
                else:
                    counter, frame = newer
                    conn.sendall(frame)
        except TimeoutError:
            with self.lock:
                self.stats.dropped_slow += 1
            self.limiter.warn(addr, "slow", f"dropped the watch from {addr}: it does not read")
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.stats.active[addr] -= 1
                if not self.stats.active[addr]:
                    del self.stats.active[addr]


# ---------------------------------------------------------------------------------------------
# watchers: every peer's set


class Watcher:
    """Watches one peer: connect, read sets and heartbeats, validate, reconnect with backoff."""

    def __init__(
        self,
        peer: PeerSpec,
        own: IPv4Address,
        port: int,
        table: Table,
        vpcs: Callable[[], frozenset[str]],
        limiter: RateLimitedLog,
    ) -> None:
        self.peer, self.own, self.port, self.table = peer, own, port, table
        self.vpcs, self.limiter = vpcs, limiter
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"mesh-watch-{peer.name}")
        self.slices = slices_of(peer)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        backoff = BACKOFF_MIN
        while not self.stop.is_set():
            error = None
            try:
                if self._session():
                    backoff = BACKOFF_MIN
            except ProtocolError as exc:
                error = f"protocol: {exc}"
                self.limiter.warn(self.peer.name, "protocol",
                                  f"rejected the stream of {self.peer.name}: {exc}")  # fmt: skip
            except (OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.table.disconnected(self.peer.name, error)
            self.stop.wait(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _session(self) -> bool:
        addr = str(self.peer.address)
        with socket.create_connection(
            (addr, self.port), timeout=CONNECT_TIMEOUT, source_address=(str(self.own), 0)
        ) as sock:
            # the sender is whoever WireGuard let answer from this address: the peer we dialled
            if sock.getpeername()[0] != addr:
                raise ProtocolError("connected to an unexpected address")
            sock.settimeout(READ_TIMEOUT)
            stream = sock.makefile("rb")
            got = False
            while not self.stop.is_set():
                line = stream.readline(MAX_LINE + 1)
                if not line:
                    return got
                if len(line) > MAX_LINE or not line.endswith(b"\n"):
                    raise ProtocolError(f"message over {MAX_LINE} bytes")
                msg = decode(line)
                self.table.seen(self.peer.name)
                got = True
                if msg.kind == "set":
                    good, bad = check_set(msg.records, self.peer.name, self.slices, self.vpcs())
                    for reason in bad:
                        self.limiter.warn(self.peer.name, reason.kind,
                                          f"rejected a record from {self.peer.name} "
                                          f"({addr}): {reason}")  # fmt: skip
                    self.table.update(self.peer.name, msg.boot, msg.counter, good, len(bad))
            return got

    def close(self) -> None:
        self.stop.set()


def close_all(watchers: Iterable[Watcher]) -> None:
    for w in watchers:
        w.close()
    for w in watchers:
        with contextlib.suppress(RuntimeError):
            w.thread.join(timeout=0.1)
