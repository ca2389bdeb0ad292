"""Issue 11's exchange in the lab: the agent daemon (`vpcctl agent run`) on 3 hosts over a real
wireguard-go mesh, fed by StaticDiscovery files (no Docker needed here).

A record announced on one host resolves on the others and enters their DNAT chains within a
second; forged announcements are rejected and never appear; a cut-off host's records leave within
the grace and come back; the daemon port is closed to the underlay; a hostile peer delays no one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import LabHost
from tests.lab.mesh import Mesh, wait_ping
from tests.paths import ROOT
from vpcctl.admin import edits
from vpcctl.core.model import parse_portspec

pytestmark = pytest.mark.lab

GRACE = 4
PORT = 51821

# A stand-in for a hostile or compromised host's daemon: it serves whatever it is given.
_FAKE_SERVER = """
import json, socket, sys, time
bind, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port)); s.listen(16)
print("listening", flush=True)
import threading
def serve(c):
    try:
        if mode == "garbage":
            while True:
                c.sendall(b"\\x00not json at all" * 4096 + b"\\n"); time.sleep(0.05)
        msg = {"v": 1, "type": "set", "boot": "forger", "counter": 1,
               "endpoints": json.loads(sys.argv[4])}
        c.sendall(json.dumps(msg).encode() + b"\\n")
        while True:
            time.sleep(1)
            c.sendall(b'{"v":1,"type":"hb","boot":"forger","counter":1}\\n')
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Client flows to a service VIP from the host itself (output DNAT): a UDP "session" and a TCP SYN.
_FLOWS = """
import socket, sys, time
vip = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"ping", (vip, 9999))
t = socket.socket(); t.setblocking(False)
try:
    t.connect((vip, 80))
except BlockingIOError:
    pass
print("sent", flush=True)
time.sleep(60)
"""

# Conntrack entries from the VIP to a backend, by protocol (through pyroute2, like the daemon).
_CONNTRACK = """
import json, socket, sys
from pyroute2 import Conntrack
ct = Conntrack()
found = {}
for e in ct.dump_entries():
    if e.tuple_orig.daddr == sys.argv[1] and e.tuple_reply.saddr == sys.argv[2]:
        name = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}.get(e.tuple_orig.proto, "?")
        found[name] = found.get(name, 0) + 1
ct.close()
print(json.dumps(found))
"""

# A peer that connects to a daemon and never reads (its receive window fills up).
_NEVER_READS = """
import socket, sys, time
socks = []
for _ in range(2):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.bind((sys.argv[3], 0)); s.connect((sys.argv[1], int(sys.argv[2]))); socks.append(s)
print("connected", flush=True)
time.sleep(120)
"""


class World:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.lab = mesh.lab

    def host(self, name: str) -> LabHost:
        return self.mesh.hosts[name]

    def slice(self, host: str, vpc: str = "prod") -> IPv4Network:
        return self.mesh.inv.hosts[host].slices[vpc]

    def addr(self, host: str, n: int, vpc: str = "prod") -> str:
        return str(self.slice(host, vpc).network_address + n)

    def announce(self, host: str, records: list[dict[str, Any]]) -> float:
        """Write the host's StaticDiscovery file atomically; returns the time it was written."""
        text = json.dumps(records)
        self.lab.run(
            self.host(host),
            [
                "sh",
                "-c",
                "cat > /etc/vpcctl/endpoints.json.tmp && "
                "mv /etc/vpcctl/endpoints.json.tmp /etc/vpcctl/endpoints.json",
            ],
            input=text,
        )
        return time.monotonic()

    def table(self, host: str) -> list[dict[str, Any]]:
        out = self.mesh.agent(self.host(host), "table", "--json").stdout
        return list(json.loads(out)["endpoints"])

    def names(self, host: str) -> set[tuple[str, str, str]]:
        return {(e["host"], e["name"], e["address"]) for e in self.table(host)}

    def dig(self, host: str, name: str) -> str:
        res = self.lab.run(
            self.host(host),
            ["dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", f"{name}.prod.vpc.internal"],
            check=False,
        )
        return res.stdout.strip()

    def chain(self, host: str, chain: str = "svc_prod_web") -> str:
        return self.lab.run(
            self.host(host), ["nft", "list", "chain", "inet", "vpcctl", chain]
        ).stdout

    def kill_daemon(self, host: str, sig: str = "TERM") -> None:
        self.lab.run(
            self.host(host),
            [
                "sh",
                "-c",
                f"p=$(cat /etc/vpcctl/daemon.pid); kill -{sig} $p;"
                " while kill -0 $p 2>/dev/null; do sleep 0.02; done",
            ],
        )

    def status(self, host: str) -> dict[str, Any]:
        return dict(self.mesh.status(host)["daemon"])


def until(check: Callable[..., bool], timeout: float, *args: Any) -> float | None:
    """Seconds until ``check(*args)`` held, or None when it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if check(*args):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab("dig", "nft")
    from tests.lab.harness import Lab

    with Lab(tmp_path_factory.mktemp("meshlab")) as lab:
        mesh = Mesh(lab)
        mesh.change(lambda inv: replace(inv, mesh=replace(inv.mesh, daemon=True, grace=GRACE)))
        for name in ("h1", "h2", "h3"):
            mesh.add_host(name)
        mesh.add_vpc("prod", "10.110.0.0/16")
        mesh.add_vpc("dev", "10.111.0.0/16")
        mesh.change(
            lambda inv: edits.add_service(
                inv,
                "web",
                "prod",
                (parse_portspec("http=80", "t"), parse_portspec("probe=9999/udp", "t")),
                (),
                selector=(("app", "web"),),
            )
        )
        w = World(mesh)
        for name in ("h1", "h2", "h3"):  # StaticDiscovery (dockerd may be installed here)
            w.announce(name, [])
        for name, result in mesh.apply_all().items():
            assert result["changed"], name
        for a in ("h1", "h2", "h3"):
            for b in ("h1", "h2", "h3"):
                if a != b:
                    assert wait_ping(lab, w.host(a), str(mesh.inv.hosts[b].address))
        for name in ("h1", "h2", "h3"):  # every daemon runs and sees both peers
            assert (
                until(
                    lambda n: (
                        w.status(n).get("running") is True
                        and all(p["reachable"] for p in w.status(n)["peers"])
                    ),
                    15,
                    name,
                )
                is not None
            ), name
        yield w


def web(w: World, host: str, name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "vpc": "prod",
        "name": name,
        "address": w.addr(host, n),
        "labels": {"app": "web", "tier": "front"},
        **extra,
    }


def test_a_record_announced_on_one_host_resolves_and_enters_dnat_everywhere_within_1s(
    world: World,
) -> None:
    w = world
    ip = w.addr("h1", 10)
    t0 = w.announce("h1", [web(w, "h1", "web-1", 10)])
    times = {}
    for h in ("h2", "h3"):
        assert until(lambda h: w.dig(h, "web-1") == ip, 3, h) is not None, w.table(h)
        times[h] = time.monotonic() - t0
        assert ip in w.chain(h), w.chain(h)
    assert max(times.values()) <= 1.0, times
    assert ("h1", "web-1", ip) in w.names("h2")
    # the announcing host serves it too (its own set), and status shows the table
    assert w.dig("h1", "web-1") == ip
    st = w.status("h2")
    h1 = next(p for p in st["peers"] if p["name"] == "h1")
    assert h1["reachable"] and h1["records"] == 1 and h1["version"], h1
    assert [e["name"] for e in w.status("h1")["own"]] == ["web-1"]


def test_b_removed_record_leaves_dns_and_dnat_within_1s(world: World) -> None:
    w = world
    ip1, ip2 = w.addr("h1", 10), w.addr("h2", 20)
    w.announce("h1", [web(w, "h1", "web-1", 10)])
    w.announce("h2", [web(w, "h2", "web-2", 20)])
    assert until(lambda: ip1 in w.chain("h3") and ip2 in w.chain("h3"), 3) is not None
    t0 = w.announce("h1", [])
    assert until(lambda: ip1 not in w.chain("h3") and ip1 not in w.chain("h2"), 3) is not None
    assert time.monotonic() - t0 <= 1.0
    assert ip2 in w.chain("h3")
    assert until(lambda: w.dig("h3", "web-1") == "", 2) is not None
    w.announce("h2", [])


def test_c_forged_announcements_are_rejected_logged_and_never_appear(world: World) -> None:
    """h1's daemon is replaced by a forger on h1's mesh address: out-of-slice addresses, h2's
    container address, an unknown VPC, a bad name. Only the one honest record gets through."""
    w, lab = world, world.lab
    w.announce("h2", [web(w, "h2", "web-2", 20)])
    assert until(lambda: ("h2", "web-2", w.addr("h2", 20)) in w.names("h3"), 3) is not None
    h1_mesh = str(w.mesh.inv.hosts["h1"].address)
    forged = [
        {"vpc": "prod", "name": "evil-1", "address": w.addr("h3", 66), "labels": {}},  # h3's slice
        {"vpc": "prod", "name": "web-2", "address": w.addr("h2", 20), "labels": {"app": "web"}},
        {"vpc": "secret", "name": "evil-2", "address": w.addr("h1", 67), "labels": {}},
        {"vpc": "prod", "name": "Evil_3", "address": w.addr("h1", 68), "labels": {}},
        {"vpc": "prod", "name": "evil-4", "address": "10.110.255.250", "labels": {}},
        {"vpc": "dev", "name": "evil-5", "address": w.addr("h1", 69), "labels": {}},  # prod slice
        {"vpc": "prod", "name": "honest", "address": w.addr("h1", 70), "labels": {}},
    ]
    w.kill_daemon("h1")
    proc = lab.popen(
        w.host("h1"),
        [sys.executable, "-c", _FAKE_SERVER, h1_mesh, str(PORT), "forge", json.dumps(forged)],
    )
    try:
        for h in ("h2", "h3"):
            assert until(lambda h: any(e["name"] == "honest" for e in w.table(h)), 8, h) is not None
            names = {e["name"]: e for e in w.table(h)}
            assert set(names) - {"web-2"} == {"honest"}, names
            assert names["web-2"]["host"] == "h2"  # h1's claim on h2's container: rejected
            peer = next(p for p in w.status(h)["peers"] if p["name"] == "h1")
            assert peer["rejected"] >= 6, peer
            for evil in ("evil-1", "evil-2", "evil-4", "evil-5"):
                assert w.dig(h, evil) == "", evil
        log = lab.run(w.host("h2"), ["cat", "/etc/vpcctl/daemon.log"]).stdout
        assert "outside h1's slice of VPC prod" in log and "unknown VPC 'secret'" in log, log
    finally:
        lab.kill(proc)
        w.mesh.apply("h1")  # the real daemon again
    assert until(lambda: all(p["reachable"] for p in w.status("h2")["peers"]), 10) is not None
    assert until(lambda: not any(e["name"] == "honest" for e in w.table("h2")), 5) is not None
    w.announce("h2", [])


def test_d_a_cut_off_host_leaves_within_the_grace_and_comes_back(world: World) -> None:
    w, lab = world, world.lab
    ip = w.addr("h3", 30)
    w.announce("h3", [web(w, "h3", "web-3", 30)])
    for h in ("h1", "h2"):
        assert until(lambda h: ip in w.chain(h), 3, h) is not None
    # underlay link down: h3's daemon keeps running but nobody hears it
    lab.run(w.host("h3"), ["ip", "link", "set", "eth0", "down"])
    t0 = time.monotonic()
    try:
        for h in ("h1", "h2"):
            assert until(lambda h: ip not in w.chain(h), GRACE + 3, h) is not None, h
        gone = time.monotonic() - t0
        assert GRACE - 1 <= gone <= GRACE + 2, gone  # not before the grace, soon after it
        assert until(lambda: w.dig("h1", "web-3") == "", 2) is not None
        peer = next(p for p in w.status("h1")["peers"] if p["name"] == "h3")
        assert not peer["reachable"] and peer["expired"], peer
    finally:
        lab.run(w.host("h3"), ["ip", "link", "set", "eth0", "up"])
    for h in ("h1", "h2"):
        assert until(lambda h: ip in w.chain(h), 10, h) is not None, h
    # the daemon killed outright: same
    w.kill_daemon("h3", "KILL")
    t0 = time.monotonic()
    assert until(lambda: ip not in w.chain("h1"), GRACE + 3) is not None
    assert time.monotonic() - t0 <= GRACE + 2
    w.mesh.apply("h3")  # apply restarts the managed daemon
    assert until(lambda: ip in w.chain("h1") and w.dig("h2", "web-3") == ip, 10) is not None
    w.announce("h3", [])


def test_e_the_daemon_port_is_closed_to_the_underlay(world: World) -> None:
    w, lab = world, world.lab
    h1_mesh = str(w.mesh.inv.hosts["h1"].address)
    probe = (
        "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])),"
        " timeout=2).recv(10); print('open')\nexcept OSError as e: print('closed', e)"
    )
    # from h2 through the underlay (a route to h1's mesh address via h1's eth0): dropped
    lab.run(
        w.host("h2"),
        [
            "ip",
            "route",
            "add",
            f"{h1_mesh}/32",
            "via",
            w.host("h1").underlay_ip,
            "dev",
            "eth0",
            "metric",
            "1",
        ],
    )
    try:
        lab.run(
            w.host("h2"),
            ["ip", "rule", "add", "pref", "50", "to", f"{h1_mesh}/32", "lookup", "main"],
        )
        out = lab.run(w.host("h2"), [sys.executable, "-c", probe, h1_mesh, str(PORT)]).stdout
    finally:
        lab.run(w.host("h2"), ["ip", "rule", "del", "pref", "50"], check=False)
        lab.run(
            w.host("h2"),
            ["ip", "route", "del", f"{h1_mesh}/32", "via", w.host("h1").underlay_ip],
            check=False,
        )
    assert out.startswith("closed"), out
    # over WireGuard: served
    served = lab.run(w.host("h2"), [sys.executable, "-c", probe, h1_mesh, str(PORT)]).stdout
    assert served.startswith("open"), served
    # the listener is on the mesh address only
    ss = lab.run(w.host("h1"), ["ss", "-Htln", f"sport = :{PORT}"]).stdout
    assert [line.split()[3] for line in ss.splitlines()] == [f"{h1_mesh}:{PORT}"], ss


def test_f_a_hostile_or_slow_peer_delays_no_one(world: World) -> None:
    """h3 hosts a peer that never reads h1's stream and, in place of its own daemon, a server
    that sends garbage; updates between h1 and h2 still arrive within a second."""
    w, lab = world, world.lab
    inv = w.mesh.inv
    h1_mesh, h3_mesh = str(inv.hosts["h1"].address), str(inv.hosts["h3"].address)
    sluggard = lab.popen(
        w.host("h3"), [sys.executable, "-c", _NEVER_READS, h1_mesh, str(PORT), h3_mesh]
    )
    w.kill_daemon("h3")
    garbage = lab.popen(
        w.host("h3"), [sys.executable, "-c", _FAKE_SERVER, h3_mesh, str(PORT), "garbage"]
    )
    try:
        time.sleep(1.0)
        for i in range(5):
            ip = w.addr("h1", 40 + i)
            t0 = w.announce("h1", [web(w, "h1", f"web-f{i}", 40 + i)])
            assert until(lambda ip: ip in w.chain("h2"), 3, ip) is not None
            assert time.monotonic() - t0 <= 1.0, i
        peer = next(p for p in w.status("h2")["peers"] if p["name"] == "h3")
        assert peer["errors"] >= 1 and "protocol" in (peer["last_error"] or ""), peer
    finally:
        lab.kill(sluggard)
        lab.kill(garbage)
        w.announce("h1", [])
        w.mesh.apply("h3")


def test_g_conntrack_entries_to_a_removed_backend_are_deleted_udp_included(world: World) -> None:
    w, lab = world, world.lab
    vip = str(w.mesh.inv.services["prod/web"].vip)
    ip = w.addr("h1", 50)
    w.announce("h1", [web(w, "h1", "web-ct", 50)])
    assert until(lambda: ip in w.chain("h2"), 3) is not None
    env = {"PYTHONPATH": str(ROOT)}

    def flows() -> dict[str, int]:
        out = lab.run(w.host("h2"), [sys.executable, "-c", _CONNTRACK, vip, ip], env=env).stdout
        return dict(json.loads(out))

    # lab hosts have no default route; a real host routes the VIP (its output DNAT) by its own
    lab.run(w.host("h2"), ["ip", "route", "add", f"{vip}/32", "dev", "vpc0"])
    client = lab.popen(w.host("h2"), [sys.executable, "-c", _FLOWS, vip])
    try:
        seen = until(lambda: flows().get("udp", 0) >= 1 and flows().get("tcp", 0) >= 1, 5)
        assert seen is not None, flows()
        before = w.status("h2")["counters"]["conntrack_deleted"]
        w.announce("h1", [])
        assert until(lambda: ip not in w.chain("h2"), 3) is not None
        assert until(lambda: flows() == {}, 2) is not None, flows()
        deleted = until(lambda: w.status("h2")["counters"]["conntrack_deleted"] >= before + 2, 5)
        assert deleted is not None
    finally:
        lab.kill(client)
        lab.run(w.host("h2"), ["ip", "route", "del", f"{vip}/32", "dev", "vpc0"], check=False)
