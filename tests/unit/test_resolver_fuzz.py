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
    query,
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
    elif kind == 1:  # maximum-size labels, too many of them
        body = b"".join(b"\x3f" + rng.randbytes(63) for _ in range(rng.randint(1, 6))) + b"\x00"
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


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def test_100k_bad_packets_then_still_answering(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone.json"
    write_zone(zone_file)
    port = free_port()
    log = tmp_path / "resolver.log"
    with FakeUpstream("127.0.0.54", silent=True) as hole, log.open("wb") as err:
        argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(zone_file)]
        argv += ["--listen", f"127.0.0.1:{port}", "--upstream", hole.spec]
        proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
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
        finally:
            proc.terminate()
            proc.wait(10)
    text = log.read_text()
    assert "error" not in text, text[-2000:]
    assert proc.returncode == 0
