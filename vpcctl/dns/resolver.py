"""The DNS server: the one module that listens on the network for names (edge: network).

What it answers comes from :mod:`vpcctl.dns.zone` (pure); how it is said on the wire is dnslib's job.
This module adds the serving machinery around them:

* **Tables**: one zone (the pure :class:`~vpcctl.dns.zone.Zone`) plus, per view, complete answers in
  wire format keyed by the query's bytes after its ID (name lower-cased). Built off the hot path
  (in the zone watcher) and swapped in with one assignment when the zone file changes.
* **dispatch**: one query packet in, one answer packet (or "forward this", or nothing) out.
  Everything unusual is parsed in full by dnslib; answers to the common shape of query (one
  question, no EDNS or a plain OPT record) are remembered, so the next identical question is
  answered by slicing the question out of the packet, looking it up and copying the query ID
  and the question bytes (0x20 case included) into the remembered answer.
* **forward**: out-of-zone names go to the upstream resolvers, for VPC and loopback clients only,
  on a small thread pool, with a deadline: no answer -> SERVFAIL.
* **Server**: UDP and TCP on each listen address, a watcher that reloads the zone file, clean
  stop.

The agent starts it with :func:`resolver_command` (README "DNS").
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import ClassVar

from dnslib import (
    CLASS,
    EDNS0,
    NS,
    OPCODE,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    A,
    DNSBuffer,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from vpcctl.core.errors import SpecError, ValidationError, VpcctlError
from vpcctl.core.model import (
    DEFAULT_STATE_DIR,
    RESOLVER_STATS_FILE,
    ZONE_FILE,
    parse_address,
    parse_int,
)
from vpcctl.core.spec import HostSpec, ZoneData, read_json, zone_from_dict
from vpcctl.dns import zone as zone_mod

DEFAULT_ZONE_FILE = DEFAULT_STATE_DIR / ZONE_FILE
DEFAULT_LISTEN = ("127.0.0.1", 53)
DNS_PORT = 53
RESOLV_CONF = Path("/etc/resolv.conf")

EDNS_PAYLOAD = 1232  # what we accept and advertise over UDP (DNS flag day 2020)
PLAIN_PAYLOAD = 512  # UDP limit for a client without EDNS
FORWARD_TIMEOUT = 1.5  # seconds before an unanswered forward becomes SERVFAIL (promise: < 2 s)
# forwards in flight; beyond this, SERVFAIL at once (a queued forward would miss its deadline)
FORWARD_WORKERS = 64
POLL_INTERVAL = 0.25  # zone file check
CACHE_LIMIT = 65536  # remembered answers, all views together; the cache restarts when full
CLIENT_LIMIT = 65536  # remembered client address -> view decisions
TCP_CONNECTIONS = 128  # concurrent TCP connections in all; when full, the longest idle goes
TCP_PER_CLIENT = 8  # concurrent TCP connections of one client address
TCP_IDLE = 10.0  # seconds in which the whole of the next query must arrive over TCP
TCP_DEADLINE = 30.0  # seconds a TCP connection may last in all, however busy
SUMMARY_INTERVAL = 60.0  # at most one log line this often about packets not answered normally
RECV_BUFFER = 4 << 20  # UDP socket receive buffer: absorbs bursts

# Query headers (after the ID) of the common shape of query, the only one the fast path knows:
# flags "standard query, RD" (AD allowed: it changes nothing in our answers), one question, no
# answer or authority records, and no additional record or one (a plain OPT record).
_HEAD_PLAIN = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
_HEAD_PLAIN_AD = b"\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00"
_HEAD_EDNS = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
_HEAD_EDNS_AD = b"\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_HEAD = b"\x00\x00\x29"  # root owner name, type OPT, then the UDP size (any)
_OPT_TAIL = b"\x00" * 6  # extended rcode 0, version 0, no flags (DO=0), no options
_OPT_LEN = 11
BADVERS = 16  # RFC 6891 extended rcode (dnslib has no name for it)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux values; Python 3.11 lacks them
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


Address = tuple[str, int]


# ---------------------------------------------------------------------------------------------
# configuration (pure)


def parse_hostport(value: str, where: str, any_port: bool = False) -> Address:
    """``10.100.1.1`` or ``10.100.1.1:5353`` -> (address, port), port 53 by default. IPv4 only.
    ``any_port``: port 0 (pick a free one) is allowed, for a listen address."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(DNS_PORT)
    addr = parse_address(host, where)
    if not port.isdigit():
        raise ValidationError(f"{where}: {value!r} has a bad port", "write ADDR or ADDR:PORT")
    return str(addr), parse_int(int(port), where, 0 if any_port else 1, 65535)


STATS_FILE = RESOLVER_STATS_FILE  # beside the zone file: UDP queries by result


@dataclass(frozen=True, slots=True)
class Config:
    zone_file: Path = DEFAULT_ZONE_FILE
    listen: tuple[Address, ...] = (DEFAULT_LISTEN,)
    upstreams: tuple[Address, ...] | None = None  # None: the nameservers of resolv_conf
    ttl: int | None = None  # None: the zone file's TTL
    resolv_conf: Path = RESOLV_CONF
    forward_timeout: float = FORWARD_TIMEOUT
    poll_interval: float = POLL_INTERVAL
    tcp_idle: float = TCP_IDLE
    tcp_deadline: float = TCP_DEADLINE
    tcp_per_client: int = TCP_PER_CLIENT
    tcp_connections: int = TCP_CONNECTIONS
    summary_interval: float = SUMMARY_INTERVAL


def listen_addresses(spec: HostSpec) -> list[str]:
    """Where a host's resolver listens: each VPC gateway address of the host, and loopback."""
    return [*(str(v.gateway.ip) for v in spec.vpcs), "127.0.0.1"]


def serve_args(
    listen: Iterable[str], upstreams: Iterable[str] = (), ttl: int | None = None
) -> list[str]:
    """The options of ``vpcctl dns serve`` after ``--zone``; loopback is always listened on."""
    addrs = [str(a) for a in listen]
    if not any(a.split(":")[0] == "127.0.0.1" for a in addrs):
        addrs.append("127.0.0.1")
    args: list[str] = []
    for a in addrs:
        args += ["--listen", a]
    for u in upstreams:
        args += ["--upstream", str(u)]
    if ttl is not None:
        args += ["--ttl", str(ttl)]
    return args


def resolver_command(
    listen: Iterable[str],
    zone_file: Path = DEFAULT_ZONE_FILE,
    upstreams: Iterable[str] = (),
    ttl: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The exact command line the host agent runs to start the resolver:
    ``resolver_command(listen_addresses(spec))``.

    Without ``upstreams`` the resolver forwards to the nameservers of /etc/resolv.conf, except
    itself."""
    head = [python, "-m", "vpcctl", "dns", "serve", "--zone", str(zone_file)]
    return [*head, *serve_args(listen, upstreams, ttl)]


def systemd_env(
    listen: Iterable[str], upstreams: Iterable[str] = (), ttl: int | None = None
) -> str:
    """/etc/vpcctl/dns.env for examples/systemd/vpcctl-dns.service (same options)."""
    return "VPCCTL_DNS_ARGS=" + " ".join(serve_args(listen, upstreams, ttl)) + "\n"


def nameservers(resolv_conf_text: str) -> list[Address]:
    """The IPv4 ``nameserver`` lines of a resolv.conf, in order."""
    found: list[Address] = []
    for line in resolv_conf_text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append((str(IPv4Address(words[1])), DNS_PORT))
            except ValueError:
                continue  # IPv6 or garbage: this resolver forwards over IPv4 only
    return found


def without_self(
    upstreams: Iterable[Address],
    listen: Iterable[Address],
    is_local: Callable[[str], bool],
) -> tuple[list[Address], list[Address]]:
    """Split upstreams into (kept, dropped): an upstream that is one of our own listening sockets
    would make a forwarding loop. ``is_local(addr)`` says whether an address is this machine's
    (it matters when we listen on 0.0.0.0)."""
    ours = set(listen)
    wildcard_ports = {p for a, p in ours if a == "0.0.0.0"}
    kept: list[Address] = []
    dropped: list[Address] = []
    for up in upstreams:
        looping = up in ours or (up[1] in wildcard_ports and is_local(up[0]))
        (dropped if looping else kept).append(up)
    return kept, dropped


def zone_from_text(text: str | bytes, source: str) -> ZoneData:
    """A zone file: a whole HostSpec (its "dns" part is used) or just the dns object."""
    return read_json(
        text,
        source,
        'write the output of `vpcctl render HOST` or its "dns" part',
        zone_from_dict,
        lambda raw: raw["dns"] if isinstance(raw, dict) and "dns" in raw else raw,
    )


def read_zone_file(path: Path) -> ZoneData:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SpecError(
            f"{path}: cannot read the zone file ({exc.strerror or exc})",
            "the agent writes it on `vpcctl apply`; or pass --zone FILE",
        ) from None
    return zone_from_text(text, str(path))


# ---------------------------------------------------------------------------------------------
# answer tables and dispatch (no I/O)


class _ViewCache:
    """One view and its remembered answers (without their 2-byte ID), keyed by the query:
    ``plain``: query header and question (name in lower case), for queries without EDNS;
    ``edns``: the question alone, for queries ending in a plain OPT record."""

    __slots__ = ("edns", "plain", "view")

    def __init__(self, view: zone_mod.View | None) -> None:
        self.view = view
        self.plain: dict[bytes, bytes] = {}
        self.edns: dict[bytes, bytes] = {}


@dataclass(frozen=True, slots=True)
class Forward:
    """Not ours: send ``packet`` upstream; ``question`` is its raw question, to check replies."""

    request: DNSRecord
    packet: bytes
    question: bytes


Outcome = bytes | Forward | None


class Tables:
    """The answer tables of one zone. A zone change builds a new Tables; nothing is patched."""

    def __init__(
        self,
        zone: zone_mod.Zone | None,
        cache_limit: int = CACHE_LIMIT,
        own: frozenset[str] = frozenset(),
    ) -> None:
        """``own``: the resolver's own listen addresses. A query from one of them comes from this
        host (the kernel drops a packet from outside that claims a local source address), e.g.
        systemd-resolved asking the VPC gateway it was given: it gets the host's view."""
        self.zone = zone
        self.own = own
        self.cache_limit = cache_limit
        self.cached = 0
        self.vpcs: list[tuple[IPv4Network, _ViewCache]] = []
        if zone is not None:
            self.vpcs = [(cidr, _ViewCache(view)) for cidr, _n, view in zone.vpc_views]
        # without a zone, loopback may still forward (view None), VPC clients are unknown
        self.host = _ViewCache(zone.host_view if zone is not None else None)
        self.clients: dict[str, _ViewCache | None] = {}

    def view_of(self, client: str) -> _ViewCache | None:
        """The view of a client address; None: refused. Remembered per address."""
        try:
            return self.clients[client]
        except KeyError:
            pass
        try:
            ip = IPv4Address(client)
        except ValueError:
            return None
        found = None if client in self.own else next((vc for c, vc in self.vpcs if ip in c), None)
        if found is None and (ip in zone_mod.LOOPBACK or client in self.own):
            found = self.host
        if len(self.clients) >= CLIENT_LIMIT:
            self.clients.clear()
        self.clients[client] = found
        return found

    def remember(self, vc: _ViewCache, plain: bool, key: bytes, answer: bytes) -> None:
        if self.cached >= self.cache_limit:
            for _cidr, other in self.vpcs:
                other.plain.clear()
                other.edns.clear()
            self.host.plain.clear()
            self.host.edns.clear()
            self.cached = 0
        (vc.plain if plain else vc.edns)[key] = answer
        self.cached += 1


def _plain_opt(packet: bytes) -> bool:
    """Does the packet end in an OPT record with no flags and no options?"""
    return packet[-11:-8] == _OPT_HEAD and packet[-6:] == _OPT_TAIL


def fast_answer(tables: Tables, packet: bytes, client: str) -> bytes | None:
    """The remembered answer to ``packet`` (with its ID and question), or None.

    Only the common shape of query is looked up (see ``_HEAD_PLAIN``); its bytes after the ID
    are the key (the question with its name in lower case), so a malformed packet can only miss.
    A name asked in lower case without EDNS is found with one dict lookup: that is the path
    :meth:`Server._serve_udp` takes inline."""
    vc = tables.clients.get(client)
    if vc is None:
        return None
    found = vc.plain.get(packet[2:])
    if found is not None:
        return packet[:2] + found
    head = packet[2:12]
    if head in (_HEAD_PLAIN, _HEAD_PLAIN_AD):
        question = packet[12:]
        found = vc.plain.get(_HEAD_PLAIN + question.lower())
    elif head in (_HEAD_EDNS, _HEAD_EDNS_AD) and _plain_opt(packet):
        question = packet[12:-_OPT_LEN]
        found = vc.edns.get(question.lower())
    else:
        return None
    if found is None:
        return None
    # the remembered answer holds the question in lower case: put the client's own back (0x20)
    return packet[:2] + found[:10] + question + found[10 + len(question) :]


def _header_reply(packet: bytes, rcode: int) -> bytes:
    """An answer carrying only a header (for packets we cannot parse)."""
    ident, flags = struct.unpack_from("!HH", packet)
    header = DNSHeader(id=ident, qr=1, opcode=(flags >> 11) & 0xF, rd=flags & 1, rcode=rcode)
    return bytes(DNSRecord(header).pack())


def _rdata(record: zone_mod.Record) -> object:
    d = record.data
    if record.rtype == "A":
        return A(str(d[0]))
    if record.rtype == "PTR":
        return PTR(str(d[0]))
    if record.rtype == "NS":
        return NS(str(d[0]))
    if record.rtype == "SRV":
        return SRV(priority=int(d[0]), weight=int(d[1]), port=int(d[2]), target=str(d[3]))
    if record.rtype == "SOA":
        return SOA(mname=str(d[0]), rname=str(d[1]), times=tuple(int(t) for t in d[2:7]))
    raise ValueError(f"no wire format for {record.rtype}")  # zone.py makes none other


def _rr(record: zone_mod.Record, qname: DNSLabel, qname_norm: str) -> RR:
    # the owner of an answer at the question's name is the question's own label, so that it
    # compresses to a pointer at the question and keeps the case the client asked with
    owner = qname if record.name == qname_norm else DNSLabel(record.name)
    return RR(owner, getattr(QTYPE, record.rtype), rdata=_rdata(record), ttl=record.ttl)


@dataclass(frozen=True, slots=True)
class _Query:
    request: DNSRecord
    edns: RR | None
    limit: int  # largest answer the client takes


def _reply(
    q: _Query,
    rcode: int,
    *,
    aa: bool = False,
    ra: bool = True,
    answers: Sequence[zone_mod.Record] = (),
    authority: Sequence[zone_mod.Record] = (),
) -> bytes:
    req = q.request
    header = DNSHeader(
        id=req.header.id,
        qr=1,
        opcode=req.header.opcode,
        aa=int(aa),
        rd=req.header.rd,
        ra=int(ra),
        cd=req.header.cd,
        rcode=rcode & 0xF,
    )
    opt = None
    if q.edns is not None:
        do = "do" if q.edns.ttl & 0x8000 else ""
        opt = EDNS0(udp_len=EDNS_PAYLOAD, ext_rcode=rcode >> 4, flags=do)
    reply = DNSRecord(header, questions=list(req.questions))
    if req.questions:
        qname = req.q.qname
        qnorm = zone_mod.normalize(str(qname))
        for r in answers:
            reply.add_answer(_rr(r, qname, qnorm))
        for r in authority:
            reply.add_auth(_rr(r, qname, qnorm))
    if opt is not None:
        reply.add_ar(opt)
    wire = bytes(reply.pack())
    if len(wire) > q.limit:  # too big for the client: say so (TC), it retries over TCP
        header.tc = 1
        short = DNSRecord(header, questions=list(req.questions))
        if opt is not None:
            short.add_ar(opt)
        wire = bytes(short.pack())
    return wire


def _question_bytes(question: DNSQuestion) -> bytes:
    buf = DNSBuffer()
    question.pack(buf)
    return bytes(buf.data)


def dispatch(tables: Tables, packet: bytes, client: str, max_size: int | None = None) -> Outcome:
    """The answer to one query packet from ``client`` (its source address).

    ``max_size`` None means UDP (512 bytes, or the client's EDNS size up to 1232); TCP passes
    65535. Returns the answer packet, a :class:`Forward`, or None (drop: not a query)."""
    hit = fast_answer(tables, packet, client)
    if hit is not None:
        return hit
    if len(packet) < 12 or packet[2] & 0x80:
        return None  # too short to answer, or a response: never answer those (no loops)
    qd, an, ns, ar = struct.unpack_from("!HHHH", packet, 4)
    if qd != 1 or an or ns or ar > 3:
        return _header_reply(packet, RCODE.FORMERR)
    try:
        request = DNSRecord.parse(packet)
        # a label over 63 octets or a name over 255 parses, but cannot be echoed or looked up
        _question_bytes(request.q)
    except Exception:  # hostile input: dnslib raises DNSError, and others on some packets
        return _header_reply(packet, RCODE.FORMERR)
    opts = [r for r in request.ar if r.rtype == QTYPE.OPT]
    edns = opts[0] if opts else None
    if max_size is not None:
        limit = max_size
    elif edns is not None:
        limit = max(PLAIN_PAYLOAD, min(int(edns.rclass), EDNS_PAYLOAD))
    else:
        limit = PLAIN_PAYLOAD
    q = _Query(request, edns, limit)
    if len(opts) > 1:
        return _reply(q, RCODE.FORMERR)
    if edns is not None and (edns.ttl >> 16) & 0xFF != 0:
        return _reply(q, BADVERS)
    if request.header.opcode != OPCODE.QUERY:
        return _reply(q, RCODE.NOTIMP)
    vc = tables.view_of(client)
    if vc is None:
        return _reply(q, RCODE.REFUSED, ra=False)
    question = request.q
    if question.qclass != CLASS.IN or question.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return _reply(q, RCODE.REFUSED)
    if tables.zone is None or vc.view is None:
        return Forward(request, packet, _question_bytes(question))
    ans = zone_mod.answer_in_view(tables.zone, vc.view, str(question.qname), QTYPE[question.qtype])
    if ans.rcode == "FORWARD":
        return Forward(request, packet, _question_bytes(question))
    rcode = RCODE.NOERROR if ans.rcode == "NOERROR" else RCODE.NXDOMAIN
    wire = _reply(q, rcode, aa=True, answers=ans.answers, authority=ans.authority)
    _maybe_remember(tables, vc, packet, question, edns, wire)
    return wire


def _maybe_remember(
    tables: Tables,
    vc: _ViewCache,
    packet: bytes,
    question: DNSQuestion,
    edns: RR | None,
    wire: bytes,
) -> None:
    """Remember an answer when the query had exactly the shape :func:`fast_answer` looks up.

    Only complete answers that fit any client (512 bytes, not truncated) are remembered: the
    same bytes are then right over UDP with or without EDNS, and over TCP."""
    if len(wire) > PLAIN_PAYLOAD or wire[2] & 0x02:
        return
    head = packet[2:12]
    if head in (_HEAD_PLAIN, _HEAD_PLAIN_AD):
        raw, plain = packet[12:], True
    elif head in (_HEAD_EDNS, _HEAD_EDNS_AD) and edns is not None and _plain_opt(packet):
        raw, plain = packet[12:-_OPT_LEN], False
    else:
        return
    if raw != _question_bytes(question):
        return  # e.g. a compression pointer in the question: not the canonical form
    low = raw.lower()
    key = _HEAD_PLAIN + low if plain else low
    tables.remember(vc, plain, key, wire[2:12] + low + wire[12 + len(low) :])


def servfail(fwd: Forward, max_size: int | None = None) -> bytes:
    """The answer when no upstream answered a forwarded query."""
    opts = [r for r in fwd.request.ar if r.rtype == QTYPE.OPT]
    limit = max_size if max_size is not None else PLAIN_PAYLOAD
    return _reply(_Query(fwd.request, opts[0] if opts else None, limit), RCODE.SERVFAIL)


# ---------------------------------------------------------------------------------------------
# forwarding (network)


def _matches(reply: bytes, packet: bytes, question: bytes) -> bool:
    end = 12 + len(question)
    return (
        len(reply) >= end
        and reply[:2] == packet[:2]
        and bool(reply[2] & 0x80)
        and reply[4:6] == b"\x00\x01"
        and reply[12:end].lower() == question.lower()
    )


def _recv_until(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """Exactly ``n`` bytes, all of them by ``deadline`` (monotonic clock), or TimeoutError: a
    peer trickling one byte at a time cannot stretch the wait. None: the peer closed."""
    data = bytearray()
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _tcp_exchange(
    upstream: Address, packet: bytes, question: bytes, deadline: float
) -> bytes | None:
    try:
        with socket.create_connection(
            upstream, timeout=max(deadline - time.monotonic(), 0.01)
        ) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            head = _recv_until(s, 2, deadline)
            if head is None:
                return None
            reply = _recv_until(s, struct.unpack("!H", head)[0], deadline)
    except OSError:
        return None
    return reply if reply is not None and _matches(reply, packet, question) else None


def forward(
    packet: bytes,
    question: bytes,
    upstreams: Sequence[Address],
    timeout: float = FORWARD_TIMEOUT,
    tcp: bool = False,
) -> bytes | None:
    """Ask the upstreams (the next one every timeout/(n+1) seconds, all answers welcome until the
    deadline) from a fresh socket (random source port). The query goes out as the client sent
    it, ID included, so the answer goes back unchanged. ``tcp``: the client asked over TCP, so a
    truncated upstream answer is fetched again over TCP. None: nobody answered in time."""
    if not upstreams:
        return None
    start = time.monotonic()
    deadline = start + timeout
    step = timeout / (len(upstreams) + 1)
    accepted = set(upstreams)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        sent = 0
        next_send = start
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if sent < len(upstreams) and now >= next_send:
                with contextlib.suppress(OSError):
                    s.sendto(packet, upstreams[sent])
                sent += 1
                next_send = now + step
            wake = next_send if sent < len(upstreams) else deadline
            s.settimeout(max(min(wake, deadline) - now, 0.001))
            try:
                reply, addr = s.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                continue  # e.g. ICMP unreachable reported on the socket
            if (addr[0], addr[1]) not in accepted or not _matches(reply, packet, question):
                continue
            if tcp and reply[2] & 0x02:
                full = _tcp_exchange((addr[0], addr[1]), packet, question, deadline)
                if full is not None:
                    return full
            return reply


# ---------------------------------------------------------------------------------------------
# the server (network, threads)


def _is_local(addr: str) -> bool:
    """Is ``addr`` an address of this machine? (Binding to it works only then.)"""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _bind(sock: socket.socket, addr: Address) -> None:
    # IP_FREEBIND: a VPC gateway address may appear after we start (the bridge comes later)
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind(addr)


def _open_pair(addr: Address) -> tuple[socket.socket, socket.socket, Address]:
    """A UDP and a TCP socket on the same address and port (port 0: any free one)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                try:
                    udp.setsockopt(socket.SOL_SOCKET, opt, RECV_BUFFER)
                    break
                except OSError:
                    continue
            _bind(udp, addr)
            bound = (addr[0], udp.getsockname()[1])
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(tcp, bound)
            tcp.listen(64)
            return udp, tcp, bound
        except OSError as exc:
            udp.close()
            tcp.close()
            if addr[1] == 0 and exc.errno == errno.EADDRINUSE:
                continue  # the free UDP port was taken for TCP: try another
            hint = (
                "port 53 needs root (or CAP_NET_BIND_SERVICE)"
                if exc.errno == errno.EACCES
                else "is another DNS server (dnsmasq, systemd-resolved) listening there?"
            )
            raise VpcctlError(
                f"cannot listen on {addr[0]}:{addr[1]} ({exc.strerror or exc})", hint
            ) from None
    raise VpcctlError(f"no free port on {addr[0]} for both UDP and TCP", "pass a port")


Log = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Counters:
    """What the resolver did not answer normally, counted instead of logged one line each.

    ``add`` counts (any thread); ``summary`` (the watcher, every poll) logs one line with the
    counts since the last line, at most every ``interval`` seconds. ``totals`` since start."""

    KINDS: ClassVar[dict[str, str]] = {
        "malformed": "malformed packets dropped",
        "formerr": "answered FORMERR",
        "tcp_refused": "TCP connections refused (too many)",
        "tcp_evicted": "idle TCP connections closed for new ones",
        "tcp_timeout": "TCP connections timed out",
        "tcp_bad": "TCP connections hung up on (not a query)",
        "errors": "internal errors",
    }

    def __init__(
        self, log: Log, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self.pending: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.pending[kind] = self.pending.get(kind, 0) + n
            self.totals[kind] = self.totals.get(kind, 0) + n

    def summary(self, force: bool = False) -> None:
        now = self._clock()
        with self._lock:
            if not self.pending or (not force and now - self._since < self._interval):
                return
            counts, self.pending = self.pending, {}
            seconds, self._since = now - self._since, now
        text = ", ".join(f"{n} {self.KINDS.get(k, k)}" for k, n in sorted(counts.items()))
        self._log(f"in the last {seconds:.0f} s: {text}")


@dataclass
class _Conn:
    """One TCP connection: its client, and since when it waits for a query (None: busy)."""

    client: str
    idle_since: float | None
    closing: bool = False


@dataclass
class _Sockets:
    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    bound: list[Address] = field(default_factory=list)


class Server:
    """The resolver: ``start()`` binds and serves in threads, ``stop()`` ends it.

    ``load`` reads the zone file (passed in so tests can hand over any ZoneData)."""

    def __init__(
        self,
        config: Config,
        log: Log = _stderr,
        load: Callable[[Path], ZoneData] = read_zone_file,
        is_local: Callable[[str], bool] = _is_local,
    ) -> None:
        self.config = config
        self._log = log
        self._load = load
        self._is_local = is_local
        self.tables = Tables(None)
        self.upstreams: tuple[Address, ...] = ()
        self._sockets = _Sockets()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._zone_key: tuple[int, int, int, int] | None = None
        self._resolv_key: tuple[int, int, int, int] | None = None
        self._pool = ThreadPoolExecutor(FORWARD_WORKERS, thread_name_prefix="dns-forward")
        self._forward_slots = threading.BoundedSemaphore(FORWARD_WORKERS)
        self._tcp_conns: dict[socket.socket, _Conn] = {}
        self._lock = threading.Lock()
        self.reloads = 0
        self.counters = Counters(log, config.summary_interval)
        self._error_logged = 0.0  # when an internal error was last logged in full
        # UDP queries by result (the metrics read them from STATS_FILE beside the zone): the
        # fast path counts one int; updates from several threads may rarely be lost
        self.cached = 0
        self.results: dict[str, int] = {}
        self._stats_written: str | None = None

    # -- lifecycle

    @property
    def addresses(self) -> list[Address]:
        """Where it listens (ports resolved when 0 was asked)."""
        return list(self._sockets.bound)

    def start(self) -> None:
        self._check_zone(first=True)
        try:
            for addr in self.config.listen:
                udp, tcp, bound = _open_pair(addr)
                self._sockets.udp.append(udp)
                self._sockets.tcp.append(tcp)
                self._sockets.bound.append(bound)
        except VpcctlError:
            self._close_sockets()
            raise
        for a, _p in self.addresses:
            if a != "0.0.0.0" and not self._is_local(a):
                self._log(f"{a} is not (yet) an address of this host: listening on it anyway")
        self._check_upstreams(first=True)
        for udp in self._sockets.udp:
            self._spawn(self._serve_udp, udp, name="dns-udp")
        for tcp in self._sockets.tcp:
            self._spawn(self._serve_tcp, tcp, name="dns-tcp")
        self._spawn(self._watch, name="dns-watch")
        self._log("listening on " + ", ".join(f"{a}:{p} (udp, tcp)" for a, p in self.addresses))

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        for s in (*self._sockets.udp, *self._sockets.tcp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recvfrom / accept
        with self._lock:
            conns = list(self._tcp_conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_sockets()
        self.counters.summary(force=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped; True if it was."""
        return self._stopping.wait(timeout)

    def _close_sockets(self) -> None:
        for s in (*self._sockets.udp, *self._sockets.tcp):
            s.close()

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- zone and upstreams

    def _check_zone(self, first: bool = False) -> None:
        path = self.config.zone_file
        key = _stat_key(path)
        if key == self._zone_key and not first:
            return
        self._zone_key = key
        if key is None:
            if first:
                self._log(f"no zone file at {path} yet: forwarding only, for loopback only")
            elif self.tables.zone is not None:
                self._log(f"{path} disappeared: keeping the zone loaded")
            return
        try:
            data = self._load(path)
        except VpcctlError as exc:
            if first:
                raise
            self._log(f"error: {exc.message}: keeping the zone loaded")
            return
        if self.config.ttl is not None:
            data = replace(data, ttl=self.config.ttl)
        built = zone_mod.build(data)
        own = frozenset(a for a, _port in self.config.listen)
        self.tables = Tables(built, own=own)  # one assignment: the serving threads pick it up
        if not first:
            self.reloads += 1
        n = zone_mod.names((built.host_view, *(v for _c, _n, v in built.vpc_views)))
        self._log(f"zone {path}: {n} names, {len(data.vpcs)} VPCs, TTL {data.ttl}")

    def _check_upstreams(self, first: bool = False) -> None:
        if self.config.upstreams is not None:
            if first:
                self.upstreams = self._usable(self.config.upstreams)
            return
        path = self.config.resolv_conf
        key = _stat_key(path)
        if key == self._resolv_key and not first:
            return
        self._resolv_key = key
        try:
            found = nameservers(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            found = []
        self.upstreams = self._usable(found, source=str(path))

    def _usable(self, ups: Iterable[Address], source: str = "--upstream") -> tuple[Address, ...]:
        kept, dropped = without_self(ups, self.addresses, self._is_local)
        for a, p in dropped:
            self._log(f"not forwarding to {a}:{p} ({source}): that is this resolver")
        if not kept:
            self._log(f"no upstream resolver ({source}): out-of-zone names get SERVFAIL")
        else:
            self._log("upstream: " + ", ".join(f"{a}:{p}" for a, p in kept))
        return tuple(kept)

    def _watch(self) -> None:
        while not self._stopping.wait(self.config.poll_interval):
            try:
                self._check_zone()
                self._check_upstreams()
                self.counters.summary()
                self.write_stats()
            except Exception as exc:  # the watcher must outlive any one bad zone file
                self._log(f"error: reloading failed: {exc!r}")

    def _error(self, what: str, exc: BaseException) -> None:
        """An internal error (a bug): counted; logged in full at most once per summary interval,
        so that a packet flood hitting a bug cannot flood the log."""
        self.counters.add("errors")
        now = time.monotonic()
        if now - self._error_logged >= self.config.summary_interval:
            self._error_logged = now
            self._log(f"error: {what}: {exc!r}")

    def _result(self, out: Outcome) -> None:
        if out is None:
            kind = "malformed"
        elif isinstance(out, Forward):
            kind = "forwarded"
        else:
            kind = RCODE.get(out[3] & 0xF, "other").lower() if len(out) >= 4 else "other"
        self.results[kind] = self.results.get(kind, 0) + 1

    def write_stats(self) -> None:
        """UDP queries by result, as JSON beside the zone file, when they changed."""
        counts = dict(self.results)
        counts["noerror"] = counts.get("noerror", 0) + self.cached
        text = json.dumps(counts, sort_keys=True) + "\n"
        if text == self._stats_written:
            return
        path = self.config.zone_file.with_name(STATS_FILE)
        tmp = path.with_name(f".{STATS_FILE}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError:
            return
        self._stats_written = text

    def _count(self, out: Outcome) -> None:
        if out is None:
            self.counters.add("malformed")
        elif isinstance(out, bytes) and len(out) >= 4 and out[3] & 0xF == RCODE.FORMERR:
            self.counters.add("formerr")

    # -- UDP

    def _serve_udp(self, sock: socket.socket) -> None:
        recv = sock.recvfrom
        send = sock.sendto
        while True:
            try:
                packet, addr = recv(4096)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if addr is None:  # woken up by stop()
                if self._stopping.is_set():
                    return
                continue
            vc = self.tables.clients.get(addr[0])
            if vc is not None:  # the fast path, inline (see fast_answer)
                found = vc.plain.get(packet[2:])
                if found is not None:
                    self.cached += 1
                    try:  # noqa: SIM105 (contextlib.suppress costs more, here in the hot loop)
                        send(packet[:2] + found, addr)
                    except OSError:
                        pass
                    continue
            try:
                out = dispatch(self.tables, packet, addr[0])
            except Exception as exc:  # a bug must cost one answer, not the server
                self._error(f"answering {addr[0]}", exc)
                continue
            if out is None or (isinstance(out, bytes) and out[3] & 0xF == RCODE.FORMERR):
                self._count(out)
                if out is None:
                    continue
            self._result(out)
            if isinstance(out, Forward):
                self._forward_udp(sock, out, addr)
                continue
            try:
                send(out, addr)
            except OSError:
                continue

    def _forward_udp(self, sock: socket.socket, fwd: Forward, addr: Address) -> None:
        if not self._forward_slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                sock.sendto(servfail(fwd), addr)  # every slot busy: fail now, not late
            return
        try:
            self._pool.submit(self._forward_job, sock, fwd, addr)
        except RuntimeError:  # pool shut down: stopping
            self._forward_slots.release()

    def _forward_job(self, sock: socket.socket, fwd: Forward, addr: Address) -> None:
        try:
            reply = forward(fwd.packet, fwd.question, self.upstreams, self.config.forward_timeout)
            with contextlib.suppress(OSError):
                sock.sendto(reply if reply is not None else servfail(fwd), addr)
        except Exception as exc:  # keep the slot accounting right whatever happens
            self._error(f"forwarding for {addr[0]}", exc)
        finally:
            self._forward_slots.release()

    # -- TCP

    def _admit(self, conn: socket.socket, client: str) -> bool:
        """Register a new connection within the caps: per client (refused beyond it) and in all
        (then the connection idle the longest is closed for it; refused if none is idle)."""
        cfg = self.config
        with self._lock:
            live = [c for c in self._tcp_conns.values() if not c.closing]
            if sum(c.client == client for c in live) >= cfg.tcp_per_client:
                self.counters.add("tcp_refused")
                return False
            if len(live) >= cfg.tcp_connections:
                idle = [(c.idle_since, s) for s, c in self._tcp_conns.items()
                        if not c.closing and c.idle_since is not None]  # fmt: skip
                if not idle:
                    self.counters.add("tcp_refused")
                    return False
                _since, victim = min(idle, key=lambda e: e[0])
                self._tcp_conns[victim].closing = True
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)  # its thread sees the end and cleans up
                self.counters.add("tcp_evicted")
            self._tcp_conns[conn] = _Conn(client, time.monotonic())
        return True

    def _serve_tcp(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            if not self._admit(conn, addr[0]):
                conn.close()
                continue
            try:
                threading.Thread(
                    target=self._serve_conn, args=(conn, addr[0]), name="dns-tcp-conn",
                    daemon=True,
                ).start()  # fmt: skip
            except RuntimeError:  # no thread to be had: this connection only
                self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._tcp_conns.pop(conn, None)
        conn.close()

    def _serve_conn(self, conn: socket.socket, client: str) -> None:
        cfg = self.config
        end = time.monotonic() + cfg.tcp_deadline
        with self._lock:
            info = self._tcp_conns.get(conn)
        try:
            while not self._stopping.is_set() and info is not None:
                now = time.monotonic()
                info.idle_since = now
                by = min(end, now + cfg.tcp_idle)  # the whole next query, prefix included
                head = _recv_until(conn, 2, by)
                if head is None:
                    return
                packet = _recv_until(conn, struct.unpack("!H", head)[0], by)
                if packet is None:
                    return
                info.idle_since = None
                out = dispatch(self.tables, packet, client, max_size=65535)
                if isinstance(out, Forward):
                    reply = forward(
                        out.packet,
                        out.question,
                        self.upstreams,
                        self.config.forward_timeout,
                        tcp=True,
                    )
                    out = reply if reply is not None else servfail(out, 65535)
                if out is None:
                    self.counters.add("tcp_bad")
                    return  # not a query: hang up
                if out[3] & 0xF == RCODE.FORMERR:
                    self.counters.add("formerr")
                # a client that does not read its answer is bounded by the deadline too
                conn.settimeout(max(end - time.monotonic(), 0.001))
                conn.sendall(struct.pack("!H", len(out)) + out)
        except TimeoutError:
            self.counters.add("tcp_timeout")
        except OSError:
            return
        except Exception as exc:  # a bug must cost one connection, not the server
            self._error(f"answering {client} over TCP", exc)
        finally:
            self._forget(conn)
