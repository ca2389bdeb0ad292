"""The resolver in a namespace lab: real containers ask it with dig and getent.

Topology (all names carry the lab's random tag; the lab tears everything down, also on failure):

    host netns  ── bridge prod 10.100.1.1/24 ── prod container 10.100.1.2 (web-1)
                ── bridge dev  10.101.1.1/24 ── dev container  10.101.1.2 (web-1 of dev)
                ── bridge out  198.51.100.1/24 ─ outsider      198.51.100.2 (in no VPC)
                   resolver on 10.100.1.1, 10.101.1.1, 127.0.0.1 (port 53)
                   fake upstream on 127.0.0.53:5300 (answers everything with 192.0.2.99)

Built with the shared lab (tests/lab/harness.py): containers get a resolv.conf (nameserver =
their gateway, search list of their VPC) that ``ip netns exec`` puts in place of
/etc/resolv.conf: plain ``getent hosts`` uses it. No lab namespace has a route out of the machine; nothing is ever forwarded to a real
resolver.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_helpers import vpc_doc, zone_doc
from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabContainer, LabNode
from tests.paths import ROOT
from tests.waiting import wait_until

TOOLS = ("ip", "dig", "getent")
D = "vpc.internal"
VIP = "10.100.255.1"
UPSTREAM = ("127.0.0.53", 5300)
UPSTREAM_ANSWER = "192.0.2.99"

ZONE = zone_doc(
    vpc_doc(
        "prod",
        "10.100.0.0/16",
        {"web-1": "10.100.1.2", "db-1": "10.100.1.3"},
        {"db": {"vip": VIP, "ports": ["postgres=5432/tcp"]}},
    ),
    vpc_doc("dev", "10.101.0.0/16", {"web-1": "10.101.1.2"}),
)

FAKE_UPSTREAM = f"""
import socket
from dnslib import DNSRecord, RR, QTYPE, A
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind({UPSTREAM!r})
while True:
    data, addr = s.recvfrom(4096)
    try:
        q = DNSRecord.parse(data)
        r = q.reply(aa=0)
        r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A({UPSTREAM_ANSWER!r}), ttl=60))
        s.sendto(r.pack(), addr)
    except Exception:
        pass
"""


class DnsLab:
    """The resolver's topology built with the shared lab (tests/lab/harness.py): one host
    namespace with three bridges, a container on each, the resolver and a fake upstream."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.workdir / "dns"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zone = self.dir / "zone.json"
        self.log = self.dir / "resolver.log"
        self.host = lab.add_host("dns")
        self.prod: LabNode = self.host  # the containers, set by build()
        self.dev: LabNode = self.host
        self.out: LabNode = self.host

    # -- building

    def build(self) -> None:
        made: dict[str, LabContainer] = {}
        for name, gw, ip, search in (
            ("prod", "10.100.1.1", "10.100.1.2", f"prod.{D} {D}"),
            ("dev", "10.101.1.1", "10.101.1.2", f"dev.{D} {D}"),
            ("out", "198.51.100.1", "198.51.100.2", None),
        ):
            bridge = f"br-{name}"
            self.lab.run(self.host, f"ip link add {bridge} type bridge && "
                                    f"ip addr add {gw}/24 dev {bridge} && ip link set {bridge} up")  # fmt: skip
            c = self.lab.add_container(self.host, name, bridge, f"{ip}/24", gw)
            # the outsider asks prod's gateway: reachable, but it is in no VPC
            c.resolv_conf(gw if search else "10.100.1.1", search, "timeout:2 attempts:1")
            made[name] = c
        self.prod, self.dev, self.out = made["prod"], made["dev"], made["out"]
        self.write_zone(ZONE)

    def write_zone(self, zone: object) -> None:
        tmp = self.zone.with_name("zone.json.tmp")
        tmp.write_text(json.dumps(zone))
        os.replace(tmp, self.zone)

    def start(self) -> None:
        env = {"PYTHONPATH": str(ROOT)}
        script = self.dir / "upstream.py"
        script.write_text(FAKE_UPSTREAM)
        argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(self.zone)]
        for listen in ("10.100.1.1", "10.101.1.1", "127.0.0.1"):
            argv += ["--listen", listen]
        argv += ["--upstream", f"{UPSTREAM[0]}:{UPSTREAM[1]}"]
        with self.log.open("a") as log:
            procs = [
                self.lab.popen(self.host, [sys.executable, str(script)], env=env, stdout=log,
                               stderr=log),
                self.lab.popen(self.host, argv, env=env, stdout=log, stderr=log),
            ]  # fmt: skip

        def listening() -> bool:
            assert all(p.poll() is None for p in procs), self.log.read_text()
            return "listening on" in self.log.read_text()

        wait_until(listening, timeout=30, what="the resolver listening")

    # -- asking

    def in_ns(self, who: LabNode, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(who, list(argv), check=False, timeout=20)

    def dig(self, who: LabNode, *args: str) -> str:
        return self.in_ns(who, "dig", "+time=2", "+tries=1", *args).stdout

    def short(self, who: LabNode, *args: str) -> list[str]:
        return self.dig(who, "+short", *args).split()

    def status(self, who: LabNode, *args: str) -> str:
        out = self.dig(who, *args)
        marker = "status: "
        assert marker in out, out
        return out.split(marker, 1)[1].split(",", 1)[0]

    def getent(self, who: LabNode, name: str) -> tuple[int, list[str]]:
        done = self.in_ns(who, "getent", "hosts", name)
        return done.returncode, done.stdout.split()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[DnsLab]:
    require_lab(*TOOLS)
    with Lab(tmp_path / "lab") as base:
        the_lab = DnsLab(base)
        try:
            the_lab.build()
            the_lab.start()
            yield the_lab
        finally:
            with contextlib.suppress(Exception):
                print(the_lab.log.read_text())


@pytest.mark.lab
def test_containers_resolve_names_of_their_own_vpc_only(lab: DnsLab) -> None:
    prod, dev = lab.prod, lab.dev
    # prod: dig, full and short names, TCP too, PTR
    assert lab.short(prod, f"db.prod.{D}") == [VIP]
    assert lab.short(prod, "+search", "db") == [VIP]
    assert lab.short(prod, "+search", "web-1") == ["10.100.1.2"]
    assert lab.short(prod, "+tcp", f"web-1.prod.{D}") == ["10.100.1.2"]
    assert lab.short(prod, "-x", "10.100.1.3") == [f"db-1.prod.{D}."]
    assert lab.short(prod, "SRV", f"_postgres._tcp.db.prod.{D}") == [
        "0",
        "0",
        "5432",
        f"db.prod.{D}.",
    ]
    # prod: plain getent hosts, through resolv.conf and its search list
    assert lab.getent(prod, "db") == (0, [VIP, f"db.prod.{D}"])
    assert lab.getent(prod, "web-1") == (0, ["10.100.1.2", f"web-1.prod.{D}"])
    # dev: prod's names do not exist; its own web-1 does
    assert lab.status(dev, "+search", "db") == "NXDOMAIN"
    assert lab.status(dev, f"db.prod.{D}") == "NXDOMAIN"
    assert lab.status(dev, "+search", "db-1") == "NXDOMAIN"
    assert lab.getent(dev, "db")[0] == 2
    assert lab.getent(dev, "db-1")[0] == 2
    assert lab.getent(dev, "web-1") == (0, ["10.101.1.2", f"web-1.dev.{D}"])
    # the host itself (loopback) sees every VPC's full names
    assert lab.short(lab.host, "@127.0.0.1", f"web-1.dev.{D}") == ["10.101.1.2"]
    assert lab.short(lab.host, "@127.0.0.1", f"nas.{D}") == ["10.90.0.1"]


@pytest.mark.lab
def test_forwarding_for_vpcs_and_refusal_for_everyone_else(lab: DnsLab) -> None:
    assert lab.short(lab.prod, "www.example.test") == [UPSTREAM_ANSWER]
    assert lab.short(lab.dev, "www.example.test") == [UPSTREAM_ANSWER]
    assert lab.short(lab.host, "@127.0.0.1", "www.example.test") == [UPSTREAM_ANSWER]
    # in no VPC and not loopback: refused, for our names and for recursion alike
    for name in (f"db.prod.{D}", "www.example.test"):
        assert lab.status(lab.out, "@10.100.1.1", name) == "REFUSED"
        assert lab.status(lab.out, "@10.100.1.1", "+tcp", name) == "REFUSED"
    assert lab.getent(lab.out, f"db.prod.{D}")[0] == 2


@pytest.mark.lab
def test_a_new_zone_file_resolves_within_2_s(lab: DnsLab) -> None:
    assert lab.getent(lab.prod, "web-2")[0] == 2
    zone = json.loads(json.dumps(ZONE))
    zone["vpcs"][0]["containers"]["web-2"] = "10.100.1.4"
    lab.write_zone(zone)
    start = time.monotonic()
    while lab.getent(lab.prod, "web-2") != (0, ["10.100.1.4", f"web-2.prod.{D}"]):
        assert time.monotonic() - start < 2.0, "web-2 did not resolve within 2 s"
        time.sleep(0.1)
    assert lab.status(lab.dev, "+search", "web-2") == "NXDOMAIN"
