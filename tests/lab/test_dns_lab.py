"""The resolver in a namespace lab: real containers ask it with dig and getent.

Topology (all names carry a random tag; everything is torn down, also on failure):

    host netns  ── bridge prod 10.100.1.1/24 ── prod container 10.100.1.2 (web-1)
                ── bridge dev  10.101.1.1/24 ── dev container  10.101.1.2 (web-1 of dev)
                ── bridge out  198.51.100.1/24 ─ outsider      198.51.100.2 (in no VPC)
                   resolver on 10.100.1.1, 10.101.1.1, 127.0.0.1 (port 53)
                   fake upstream on 127.0.0.53:5300 (answers everything with 192.0.2.99)

Containers get ``/etc/netns/<ns>/resolv.conf`` (nameserver = their gateway, search list of
their VPC), which ``ip netns exec`` puts in place of /etc/resolv.conf: plain ``getent hosts``
uses it. No lab namespace has a route out of the machine; nothing is ever forwarded to a real
resolver.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.conftest import require_lab

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "dig", "getent")
D = "vpc.internal"
VIP = "10.100.255.1"
UPSTREAM = ("127.0.0.53", 5300)
UPSTREAM_ANSWER = "192.0.2.99"

ZONE = {
    "domain": D,
    "ttl": 5,
    "mesh_cidr": "10.90.0.0/24",
    "hosts": {"nas": "10.90.0.1"},
    "vpcs": [
        {
            "name": "prod",
            "cidr": "10.100.0.0/16",
            "containers": {"web-1": "10.100.1.2", "db-1": "10.100.1.3"},
            "services": {"db": {"vip": VIP, "ports": ["postgres=5432/tcp"]}},
        },
        {
            "name": "dev",
            "cidr": "10.101.0.0/16",
            "containers": {"web-1": "10.101.1.2"},
            "services": {},
        },
    ],
}

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


def run(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


class DnsLab:
    def __init__(self, workdir: Path) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.host = f"vdh{tag}"
        self.prod = f"vdp{tag}"
        self.dev = f"vdd{tag}"
        self.out = f"vdo{tag}"
        self.namespaces = [self.host, self.prod, self.dev, self.out]
        self.dir = workdir
        self.zone = workdir / "zone.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = workdir / "resolver.log"

    # -- building

    def build(self) -> None:
        for ns in self.namespaces:
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        h = self.host
        for ns, bridge, gw, ip, search in (
            (self.prod, "br-prod", "10.100.1.1", "10.100.1.2", f"prod.{D} {D}"),
            (self.dev, "br-dev", "10.101.1.1", "10.101.1.2", f"dev.{D} {D}"),
            (self.out, "br-out", "198.51.100.1", "198.51.100.2", None),
        ):
            run("ip", "-n", h, "link", "add", bridge, "type", "bridge")
            run("ip", "-n", h, "addr", "add", f"{gw}/24", "dev", bridge)
            run("ip", "-n", h, "link", "set", bridge, "up")
            port = f"v{ns[2]}{self.tag}"
            run(
                "ip",
                "-n",
                h,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            run("ip", "-n", h, "link", "set", port, "master", bridge, "up")
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "route", "add", "default", "via", gw)
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            # the outsider asks prod's gateway: reachable, but it is in no VPC
            nameserver = gw if search else "10.100.1.1"
            text = f"nameserver {nameserver}\n" + (f"search {search}\n" if search else "")
            (etc / "resolv.conf").write_text(text + "options timeout:2 attempts:1\n")
        self.write_zone(ZONE)

    def write_zone(self, zone: object) -> None:
        tmp = self.zone.with_name("zone.json.tmp")
        tmp.write_text(json.dumps(zone))
        os.replace(tmp, self.zone)

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        script = self.dir / "upstream.py"
        script.write_text(FAKE_UPSTREAM)
        self.spawn(["ip", "netns", "exec", self.host, sys.executable, str(script)], env)
        argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(self.zone)]
        for listen in ("10.100.1.1", "10.101.1.1", "127.0.0.1"):
            argv += ["--listen", listen]
        argv += ["--upstream", f"{UPSTREAM[0]}:{UPSTREAM[1]}"]
        self.spawn(["ip", "netns", "exec", self.host, *argv], env)
        deadline = time.monotonic() + 30
        while "listening on" not in self.log.read_text():
            assert all(p.poll() is None for p in self.procs), self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def spawn(self, argv: list[str], env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))

    # -- asking

    def in_ns(self, ns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *argv, check=check)

    def dig(self, ns: str, *args: str) -> str:
        return self.in_ns(ns, "dig", "+time=2", "+tries=1", *args).stdout

    def short(self, ns: str, *args: str) -> list[str]:
        return self.dig(ns, "+short", *args).split()

    def status(self, ns: str, *args: str) -> str:
        out = self.dig(ns, *args)
        marker = "status: "
        assert marker in out, out
        return out.split(marker, 1)[1].split(",", 1)[0]

    def getent(self, ns: str, name: str) -> tuple[int, list[str]]:
        done = self.in_ns(ns, "getent", "hosts", name)
        return done.returncode, done.stdout.split()

    # -- tearing down

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[DnsLab]:
    require_lab(*TOOLS)
    the_lab = DnsLab(tmp_path)
    try:
        the_lab.build()
        the_lab.start()
        yield the_lab
    finally:
        with contextlib.suppress(Exception):
            print(the_lab.log.read_text())
        the_lab.close()


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
