"""Malformed, truncated and random packets never crash or stall the resolver.

* hypothesis, at the dispatch level: whatever the packet and the client, dispatch returns
  nothing, a Forward or an answer that dnslib parses, with the query's ID, and for a query with
  one question that question echoed byte for byte;
* hypothesis again, over the wire, to an in-process server;
* a bulk loop: a real ``vpcctl dns serve`` process gets >= 100,000 random, mutated and
  structurally hostile packets on 127.0.0.1, then must still answer correctly (UDP and TCP)
  and must have logged no internal error.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSBuffer, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dns_helpers import (
    HOST_CLIENT,
    PROD_CLIENT,
    ZONE,
    D,
    FakeUpstream,
    addresses,
    ask,
    exchange,
    free_port,
    query,
    wait_answering,
    write_zone,
)
from tests.paths import ROOT
from vpcctl.dns import zone
from vpcctl.dns.resolver import Config, Forward, Server, Tables, dispatch, zone_from_text

BULK_PACKETS = 100_000
CLIENTS = (PROD_CLIENT, "127.101.1.2", HOST_CLIENT, "192.0.2.7", "10.90.0.1")
NAMES = (
    "web-1",
    "WEB-1.prod",
    f"db.prod.{D}",
    f"nope.{D}",
    "example.org",
    "1.0.90.10.in-addr.arpa",
    "",
)
QTYPES = ("A", "AAAA", "SRV", "PTR", "SOA", "NS", "ANY", "AXFR", "TXT", "OPT")


TABLES = Tables(zone.build(zone_from_text(json.dumps(ZONE), "zone")))


# ---------------------------------------------------------------------------------------------
# packet generators (shared by hypothesis and the bulk loop)


def valid_query(rng: random.Random) -> bytes:
    q = query(rng.choice(NAMES) or ".", rng.choice(QTYPES), rng.choice((None, 512, 1232, 4096)))
    q.header.id = rng.randrange(65536)
    return bytes(q.pack())


def mutate(packet: bytes, rng: random.Random) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:  # flip bits
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:  # truncate
            del data[rng.randrange(len(data) + 1) :]
        elif op == 3:  # insert junk
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:  # hostile counts
            if len(data) >= 12:
                at = rng.choice((4, 6, 8, 10))
                data[at : at + 2] = struct.pack("!H", rng.choice((0, 1, 2, 255, 65535)))
    return bytes(data)


def hostile(rng: random.Random) -> bytes:
    """Well-framed headers around nasty bodies: pointer chains and loops, long labels, many
    records, OPT records with odd options."""
    head = struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, rng.randrange(3))
    kind = rng.randrange(4)
    if kind == 0:  # chain of backward pointers ending in a loop
        body = b"\x00" + b"".join(struct.pack("!H", 0xC000 | (12 + 2 * i)) for i in range(200))
    elif kind == 1:  # maximum-size labels, too many of them (a name over 255), a whole question
        body = b"".join(b"\x3f" + rng.randbytes(63) for _ in range(rng.randint(1, 6))) + b"\x00"
        body += b"\x00\x01\x00\x01" if rng.random() < 0.7 else b""
    elif kind == 2:  # label lengths beyond 63 (reserved bits)
        body = bytes([rng.choice((64, 100, 128, 191))]) + rng.randbytes(20)
    else:  # OPT with a random option list
        body = b"\x03www\x00\x00\x01\x00\x01" + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00"
        opts = rng.randbytes(rng.randint(0, 40))
        body += struct.pack("!H", len(opts) + rng.choice((0, 0, 3))) + opts
    return head + body + rng.randbytes(rng.randint(0, 3))


def random_packet(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 600))
    if kind == 1:
        return mutate(valid_query(rng), rng)
    if kind == 2:
        return hostile(rng)
    return rng.randbytes(12) + valid_query(rng)[12:]  # random header, sound question


# ---------------------------------------------------------------------------------------------
# the property


def check(packet: bytes, out: bytes | Forward | None) -> None:
    if out is None or isinstance(out, Forward):
        return
    assert len(out) >= 12 and out[:2] == packet[:2] and out[2] & 0x80
    reply = DNSRecord.parse(out)  # always well-formed
    try:
        request = DNSRecord.parse(packet)
    except Exception:
        return
    if len(request.questions) != 1 or not reply.questions:
        return  # FORMERR for several questions: nothing to echo
    assert reply.q.qname.label == request.q.qname.label  # exact bytes, case included
    assert (reply.q.qtype, reply.q.qclass) == (request.q.qtype, request.q.qclass)
    buf = DNSBuffer()
    request.q.pack(buf)
    asked = bytes(buf.data)
    if packet[12 : 12 + len(asked)] == asked:  # not compressed: the very same bytes
        assert out[12 : 12 + len(asked)] == asked


packets = st.one_of(
    st.binary(max_size=600),
    st.randoms(use_true_random=False).map(random_packet),
    st.builds(
        lambda head, body: head + body,
        st.binary(min_size=12, max_size=12),
        st.binary(max_size=300),
    ),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packet=packets, client=st.sampled_from(CLIENTS), tcp=st.booleans())
def test_dispatch_never_fails_whatever_the_packet(packet: bytes, client: str, tcp: bool) -> None:
    out = dispatch(TABLES, packet, client, 65535 if tcp else None)
    check(packet, out)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str]]]:
    zone_file = tmp_path_factory.mktemp("fuzz") / "zone.json"
    write_zone(zone_file)
    with FakeUpstream("127.0.0.54", silent=True) as hole:
        config = Config(zone_file, (("127.0.0.1", 0),), (hole.address,), forward_timeout=0.3)
        lines: list[str] = []
        server = Server(config, log=lines.append)
        server.start()
        try:
            yield server.addresses[0][1], lines
        finally:
            server.stop()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=packets)
def test_hypothesis_packets_over_the_wire(live: tuple[int, list[str]], packet: bytes) -> None:
    port, lines = live
    expected = dispatch(TABLES, packet, PROD_CLIENT)  # same zone: does an answer come back?
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((PROD_CLIENT, 0))
        s.settimeout(3)
        s.sendto(packet, ("127.0.0.1", port))
        if expected is not None:
            out, _ = s.recvfrom(65535)
            check(packet, out)
    assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
    assert not [line for line in lines if line.startswith("error")]


# ---------------------------------------------------------------------------------------------
# the bulk loop, against a real process


@contextlib.contextmanager
def resolver_process(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    """A real ``vpcctl dns serve`` on 127.0.0.1 (free port), answering; yields (port, process,
    log file). Terminated afterwards; it must then exit 0."""
    zone_file = tmp_path / "zone.json"
    write_zone(zone_file)
    port = free_port()
    log = tmp_path / "resolver.log"
    with FakeUpstream("127.0.0.54", silent=True) as hole, log.open("wb") as err:
        argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(zone_file)]
        argv += ["--listen", f"127.0.0.1:{port}", "--upstream", hole.spec]
        proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=err)
        try:
            wait_answering(port, proc, log)
            yield port, proc, log
        finally:
            proc.terminate()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text()[-2000:]


def test_100k_bad_packets_then_still_answering(tmp_path: Path) -> None:
    with resolver_process(tmp_path) as (port, proc, log):
        rng = random.Random(20240501)
        sent = 0
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as garbage:
            garbage.bind((rng.choice(CLIENTS[:3]), 0))
            garbage.setblocking(False)
            while sent < BULK_PACKETS:
                for _ in range(1000):
                    try:
                        garbage.sendto(random_packet(rng), ("127.0.0.1", port))
                        sent += 1
                    except BlockingIOError:
                        time.sleep(0.001)
                # barrier: once this is answered, the burst before it has been read
                barrier = bytes(query(f"web-1.prod.{D}", ident=sent & 0xFFFF).pack())
                raw = exchange(port, barrier, HOST_CLIENT, timeout=10)
                assert raw[:2] == barrier[:2]
                while True:  # drop the answers to the garbage
                    try:
                        garbage.recv(65535)
                    except BlockingIOError:
                        break
        elapsed = time.monotonic() - start
        assert sent >= BULK_PACKETS and elapsed < 120, (sent, elapsed)
        # still correct, over UDP and TCP, for every kind of client
        assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
        assert addresses(ask(port, f"web-1.dev.{D}", tcp=True)) == ["127.101.1.2"]
        assert ask(port, "db", source="127.101.1.2").header.rcode == 3
        assert proc.poll() is None
    text = log.read_text()
    assert "error" not in text, text[-2000:]
    # malformed packets are counted, not logged one line each: one summary line at most a minute
    assert len(text.splitlines()) < 20, text[-2000:]
    assert "malformed packets dropped" in text and "answered FORMERR" in text, text[-2000:]


# ---------------------------------------------------------------------------------------------
# TCP and length-prefix abuse

TCP_IDLE = 0.4  # the in-process server's limits, short so that hypothesis can wait them out
TCP_DEADLINE = 1.5


@pytest.fixture(scope="module")
def live_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    zone_file = tmp_path_factory.mktemp("fuzz-tcp") / "zone.json"
    write_zone(zone_file)
    with FakeUpstream("127.0.0.55", silent=True) as hole:
        config = Config(zone_file, (("127.0.0.1", 0),), (hole.address,), forward_timeout=0.2,
                        tcp_idle=TCP_IDLE, tcp_deadline=TCP_DEADLINE)  # fmt: skip
        lines: list[str] = []
        server = Server(config, log=lines.append)
        server.start()
        try:
            yield server, server.addresses[0][1]
        finally:
            server.stop()
        assert not [line for line in lines if line.startswith("error")], lines


def _complete(data: bytes) -> int:
    n = 0
    while len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
        data = data[2 + struct.unpack("!H", data[:2])[0] :]
        n += 1
    return n


def read_frames(
    s: socket.socket, until: float, want: int | None = None
) -> tuple[list[bytes], bool]:
    """Every length-prefixed answer the server sends before ``until`` (or the first ``want``),
    and whether it hung up."""
    data = b""
    closed = False
    while time.monotonic() < until and (want is None or _complete(data) < want):
        s.settimeout(max(until - time.monotonic(), 0.01))
        try:
            chunk = s.recv(65535)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    frames = []
    while len(data) >= 2:
        n = struct.unpack("!H", data[:2])[0]
        assert len(data) >= 2 + n, "a partial answer"
        frames.append(data[2 : 2 + n])
        data = data[2 + n :]
    assert data == b"", "stray bytes after the answers"
    return frames, closed


def udp_answers(port: int) -> bool:
    return addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]


prefixes = st.one_of(
    st.just("exact"), st.just(0), st.integers(1, 11), st.integers(12, 300),
    st.integers(60000, 65535),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(prefix=prefixes, packet=packets, messages=st.integers(1, 3), half_close=st.booleans())
def test_tcp_length_prefix_abuse_never_wedges_a_connection(
    live_tcp: tuple[Server, int],
    prefix: int | str,
    packet: bytes,
    messages: int,
    half_close: bool,
) -> None:
    """Whatever the length prefix says (zero, short, the real length, far too long), and however
    many messages follow: every answer is a whole, parseable frame with the query's ID, and the
    connection is answered or closed within its idle time; UDP answers meanwhile."""
    _server, port = live_tcp
    declared = len(packet) if prefix == "exact" else int(prefix)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST_CLIENT, 0))
        s.connect(("127.0.0.1", port))
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server may hang up while we still write
            s.sendall((struct.pack("!H", declared) + packet) * messages)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        frames, closed = read_frames(s, started + TCP_IDLE + 1.0)
        elapsed = time.monotonic() - started
    sent = framed_messages((struct.pack("!H", declared) + packet) * messages)
    ids = {m[:2] for m in sent}
    for frame in frames:
        # a short prefix makes the rest of the packet the next framed message, with its own ID
        assert frame[:2] in ids and frame[2] & 0x80, (frame[:2], ids)
        DNSRecord.parse(frame)
    # nothing left hanging: either answered in full, or hung up on within the idle time
    assert closed or len(frames) == len(sent), (declared, len(packet), frames, elapsed)
    assert udp_answers(port)


def framed_messages(stream: bytes) -> list[bytes]:
    """The whole messages a DNS-over-TCP reader sees in ``stream`` (RFC 1035 4.2.2 framing)."""
    out = []
    while len(stream) >= 2:
        (n,) = struct.unpack("!H", stream[:2])
        if len(stream) < 2 + n:
            break
        out.append(stream[2 : 2 + n])
        stream = stream[2 + n :]
    return out


def test_framing_of_a_short_prefix_splits_the_packet() -> None:
    packet = bytes(12) + b"\x00\x0c" + b"\x00\x01" + bytes(10)
    assert framed_messages(struct.pack("!H", 12) + packet) == [bytes(12), b"\x00\x01" + bytes(10)]


def test_tcp_connection_deadline_and_idle_time(live_tcp: tuple[Server, int]) -> None:
    """A busy connection is still closed at its total deadline; a slowloris (one byte at a
    time, each within the idle time) is closed once the idle time for a whole query is up."""
    server, port = live_tcp
    q = bytes(query(f"web-1.prod.{D}").pack())
    frame = struct.pack("!H", len(q)) + q
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.connect(("127.0.0.1", port))
        started = time.monotonic()
        answered = 0
        with contextlib.suppress(OSError):
            while time.monotonic() - started < TCP_DEADLINE + 2:
                busy.sendall(frame)
                got, closed = read_frames(busy, time.monotonic() + 0.5, want=1)
                answered += len(got)
                if closed:
                    break
                time.sleep(0.05)
        lived = time.monotonic() - started
    assert answered >= 5 and TCP_DEADLINE - 0.2 < lived < TCP_DEADLINE + 1, (answered, lived)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as slow:
        slow.connect(("127.0.0.1", port))
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for b in frame:
                slow.sendall(bytes([b]))
                time.sleep(TCP_IDLE / 4)
        frames, closed = read_frames(slow, time.monotonic() + 1)
        assert closed and not frames
        assert time.monotonic() - started < TCP_IDLE + 1.5
    assert server.counters.totals.get("tcp_timeout", 0) >= 1
    assert udp_answers(port)


def test_tcp_abuse_against_a_real_process(tmp_path: Path) -> None:
    """A real ``vpcctl dns serve`` with its default limits: one client past its cap is refused,
    more idle connections than the cap in all make room for a new client, slowloris and bad
    length prefixes are hung up on, UDP answers throughout, and the process stays up."""
    from vpcctl.dns.resolver import TCP_CONNECTIONS, TCP_PER_CLIENT
    from vpcctl.dns.resolver import TCP_IDLE as IDLE

    q = bytes(query(f"web-1.prod.{D}").pack())
    frame = struct.pack("!H", len(q)) + q
    with resolver_process(tmp_path) as (port, proc, log), contextlib.ExitStack() as stack:

        def conn(source: str) -> socket.socket:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            return s

        def answered(s: socket.socket) -> bool:
            with contextlib.suppress(OSError):
                s.sendall(frame)
                return len(read_frames(s, time.monotonic() + 2, want=1)[0]) == 1
            return False

        # 1. one client address holds at most TCP_PER_CLIENT connections
        mine = [conn("127.0.9.9") for _ in range(TCP_PER_CLIENT + 4)]
        time.sleep(0.3)
        assert sum(answered(s) for s in mine) == TCP_PER_CLIENT
        for s in mine:
            s.close()
        # 2. more idle connections than the cap in all (from many addresses): a new client
        # still gets in (the longest idle ones are closed for it), UDP answers at once
        idle = [conn(f"127.0.{4 + i // 200}.{1 + i % 200}") for i in range(TCP_CONNECTIONS + 72)]
        time.sleep(0.5)
        t0 = time.monotonic()
        assert udp_answers(port) and time.monotonic() - t0 < 0.5
        assert answered(conn("127.0.8.1"))
        assert answered(conn("127.0.8.2"))
        closed = 0
        for s in idle:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 72 + 2, closed
        for s in idle:
            s.close()
        # 3. slowloris and length-prefix abuse, UDP checked every 0.25 s meanwhile
        loris = [conn(f"127.0.7.{i}") for i in range(1, 6)]
        zero, short, long_ = conn("127.0.6.1"), conn("127.0.6.2"), conn("127.0.6.3")
        zero.sendall(b"\x00\x00")
        short.sendall(b"\x00\x03abc")
        long_.sendall(b"\xff\xff" + q)
        trickle = b"\x00\x28" + b"x" * 40
        started = time.monotonic()
        open_loris = set(range(len(loris)))
        worst_udp = 0.0
        i = 0
        while open_loris and time.monotonic() - started < IDLE + 5:
            for n in list(open_loris):
                try:
                    loris[n].sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
                except OSError:
                    open_loris.discard(n)
            t0 = time.monotonic()
            assert udp_answers(port)
            worst_udp = max(worst_udp, time.monotonic() - t0)
            i += 1
            time.sleep(0.25)
        assert not open_loris, "slowloris connections outlived the idle time"
        assert time.monotonic() - started < IDLE + 5
        assert worst_udp < 0.5, worst_udp
        for s in (zero, short, long_):
            assert read_frames(s, time.monotonic() + 1)[1]  # hung up on
        # 4. still answering over TCP, and alive
        assert addresses(ask(port, f"web-1.dev.{D}", tcp=True)) == ["127.101.1.2"]
        assert proc.poll() is None
    text = log.read_text()
    assert "error" not in text, text[-2000:]
    assert "TCP connections refused" in text and "TCP connections timed out" in text, text
