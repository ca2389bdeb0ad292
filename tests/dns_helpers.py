"""Helpers for the resolver tests.

The test zone puts its VPC CIDRs inside 127.0.0.0/8 (prod = 127.100.0.0/16, dev =
127.101.0.0/16), so a client socket bound to 127.100.1.2 *is* a prod container as far as the
resolver can tell, and 127.0.0.1 is the host itself. Everything stays on loopback; the only
upstream any test uses is a :class:`FakeUpstream` on 127.0.0.x.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnslib import EDNS0, QTYPE, RR, A, DNSHeader, DNSQuestion, DNSRecord

from vpcctl.dns.resolver import Config, Server

D = "vpc.internal"
HOST_CLIENT = "127.0.0.1"
PROD_CLIENT = "127.100.1.2"  # prod/web-1
DEV_CLIENT = "127.101.1.2"  # dev/web-1
UPSTREAM_ANSWER = "192.0.2.99"


def vpc_doc(
    name: str, cidr: str, containers: dict[str, str], services: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One VPC of a resolver zone document."""
    return {"name": name, "cidr": cidr, "containers": containers, "services": services or {}}


def zone_doc(*vpcs: dict[str, Any], hosts: dict[str, str] | None = None) -> dict[str, Any]:
    """A resolver zone document for vpc.internal (TTL 5, mesh 10.90.0.0/24, host nas at
    10.90.0.1 unless ``hosts`` says otherwise) with these VPCs."""
    return {
        "domain": D,
        "ttl": 5,
        "mesh_cidr": "10.90.0.0/24",
        "hosts": hosts or {"nas": "10.90.0.1"},
        "vpcs": list(vpcs),
    }


ZONE: dict[str, Any] = zone_doc(
    vpc_doc(
        "prod",
        "127.100.0.0/16",
        {"web-1": "127.100.1.2", "db-1": "127.100.2.2"},
        {"db": {"vip": "127.100.255.1", "ports": ["postgres=5432/tcp", "80/tcp"]}},
    ),
    vpc_doc("dev", "127.101.0.0/16", {"web-1": "127.101.1.2"}),
    hosts={"nas": "10.90.0.1", "vps1": "10.90.0.2"},
)


def zone_with(**containers: str) -> dict[str, Any]:
    """The test zone with more prod containers."""
    z: dict[str, Any] = json.loads(json.dumps(ZONE))
    z["vpcs"][0]["containers"].update(containers)
    return z


def write_zone(path: Path, zone: object = ZONE) -> None:
    """Atomically, as the agent does: write aside, then rename over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(zone))
    os.replace(tmp, path)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def exchange(
    port: int,
    packet: bytes,
    source: str = HOST_CLIENT,
    tcp: bool = False,
    timeout: float = 3.0,
    server: str = "127.0.0.1",
) -> bytes:
    """Send one raw query from ``source``; the raw answer."""
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        if tcp:
            s.connect((server, port))
            s.sendall(struct.pack("!H", len(packet)) + packet)
            return recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0])
        s.sendto(packet, (server, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == packet[:2]:
                return data


def query(name: str, qtype: str = "A", edns: int | None = None, ident: int = 4242) -> DNSRecord:
    q = DNSRecord(DNSHeader(id=ident), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q


def ask(
    port: int,
    name: str,
    qtype: str = "A",
    source: str = HOST_CLIENT,
    tcp: bool = False,
    edns: int | None = None,
) -> DNSRecord:
    return DNSRecord.parse(exchange(port, bytes(query(name, qtype, edns).pack()), source, tcp))


def addresses(reply: DNSRecord) -> list[str]:
    return [str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A]


class FakeUpstream:
    """A resolver on 127.0.0.x for forwarding tests: answers every question with one A record
    (UPSTREAM_ANSWER), over UDP and TCP; ``silent`` never answers (a black hole)."""

    def __init__(self, address: str = "127.0.0.53", silent: bool = False) -> None:
        self.silent = silent
        self.queries = 0
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 0))
        self.address = (address, self.udp.getsockname()[1])
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(self.address)
        self.tcp.listen(8)
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    @property
    def spec(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def answer(self, packet: bytes) -> bytes:
        request = DNSRecord.parse(packet)
        reply = request.reply(aa=0)  # a recursive resolver: not authoritative
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(UPSTREAM_ANSWER), ttl=60))
        return bytes(reply.pack())

    def _serve_udp(self) -> None:
        while True:
            try:
                packet, addr = self.udp.recvfrom(65535)
            except OSError:
                return
            if addr is None:
                return
            self.queries += 1
            if not self.silent:
                with contextlib.suppress(Exception):
                    self.udp.sendto(self.answer(packet), addr)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn, contextlib.suppress(Exception):
                conn.settimeout(2)
                packet = recv_exact(conn, struct.unpack("!H", recv_exact(conn, 2))[0])
                self.queries += 1
                if not self.silent:
                    out = self.answer(packet)
                    conn.sendall(struct.pack("!H", len(out)) + out)

    def __enter__(self) -> FakeUpstream:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(2)


@contextlib.contextmanager
def running(
    config: Config, log: list[str] | None = None, **kw: Any
) -> Iterator[tuple[Server, int]]:
    """An in-process resolver on 127.0.0.1 (random port); yields it and its port. Its log lines
    go to ``log`` (tests wait on them)."""
    lines: list[str] = [] if log is None else log
    server = Server(config, log=lines.append, **kw)
    server.start()
    try:
        yield server, server.addresses[0][1]
    finally:
        server.stop()


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (a resolver listens on both)."""
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


def wait_answering(
    port: int, proc: subprocess.Popen[bytes], log: Path | None = None, timeout: float = 20
) -> None:
    """Wait until the resolver process on 127.0.0.1:``port`` answers the test zone's web-1; fail
    (with its ``log``) if it exits or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
            return
        except OSError:
            why = log.read_text() if log is not None else ""
            assert proc.poll() is None, f"the resolver exited {why}"
            assert time.monotonic() < deadline, f"the resolver did not start {why}"
