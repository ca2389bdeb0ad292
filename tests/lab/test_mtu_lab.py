"""MTU, MSS and names on the hosts, in one module-scoped lab (issue 12, items 5 and 6).

Two hosts (wireguard-go, routing ``wireguard``: this machine has no ipip module; the VM stage
covers ipip) whose underlay links are lowered to MTU 1400, the mesh told so with
``mesh set --mtu 1320`` (1400 - 80), a VPC with one container namespace on each host (their own
``eth0`` left at 1500, as a container that ignores the network's MTU would have).

The arithmetic: WireGuard costs at most 80 bytes on the underlay (outer IPv6 40 + UDP 8 +
WireGuard 32; 60 over IPv4), so a 1400 underlay carries 1320-byte packets inside WireGuard without
fragmenting. Routing ``wireguard`` puts container packets straight into WireGuard: the largest
unfragmented ICMP echo payload between the containers is 1320 - 20 (IPv4) - 8 (ICMP) = 1292, and
1293 is refused at the sending host (DF set, "fragmentation needed, mtu 1320"). (With routing
``ipip`` IPIP's 20 bytes come off too: 1272; tests/vm covers that.)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fake_resolvectl import FakeResolvectl
from tests.lab.conftest import require_lab
from tests.lab.harness import LAB_PATH, Lab, LabContainer, _readline_timeout
from tests.lab.mesh import Mesh, wait_ping
from vpcctl.admin import edits

pytestmark = pytest.mark.lab

UNDERLAY_MTU = 1400
WG_MTU = UNDERLAY_MTU - 80
LARGEST_PING = WG_MTU - 20 - 8  # 1292
MSS = WG_MTU - 40  # what the clamp leaves in a SYN toward the other host: 1280
SIZE = 10 * 1024 * 1024
PORT = 5001


@dataclass
class World:
    lab: Lab
    mesh: Mesh
    c1: LabContainer
    c2: LabContainer
    status: dict[str, Any] = field(default_factory=dict)  # h1's `agent status --json`


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab("getent", "dig")
    with Lab(tmp_path_factory.mktemp("mtulab")) as lab:
        mesh = Mesh(lab)
        for name in ("h1", "h2"):
            host = mesh.add_host(name)
            lab.run(host, ["ip", "link", "set", "eth0", "mtu", str(UNDERLAY_MTU)])
            lab.run(lab.switch, ["ip", "link", "set", host.switch_port, "mtu", str(UNDERLAY_MTU)])
        mesh.change(lambda inv: edits.set_mesh(inv, mtu=WG_MTU))
        mesh.add_vpc("prod", "10.130.0.0/16")
        mesh.apply_all()
        c1 = mesh.add_container("prod", "c1", "h1")
        c2 = mesh.add_container("prod", "c2", "h2")
        mesh.apply_all()  # the containers' names
        assert wait_ping(lab, c1, c2.ip)
        yield World(lab, mesh, c1, c2)


def test_the_interfaces_get_the_mesh_mtu(world: World) -> None:
    st = world.mesh.status("h1")
    world.status = st
    assert st["interface"]["mtu"] == WG_MTU
    assert [b["mtu"] for b in st["bridges"]] == [WG_MTU]  # routing wireguard: no IPIP
    links = json.loads(world.lab.run(world.mesh.hosts["h2"], ["ip", "-j", "link"]).stdout)
    assert {lk["ifname"]: lk["mtu"] for lk in links if lk["ifname"] in ("vpc0", "vb-prod")} == {
        "vpc0": WG_MTU, "vb-prod": WG_MTU,
    }  # fmt: skip


def _ping_df(world: World, size: int) -> str:
    res = world.lab.run(
        world.c1, ["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", str(size), world.c2.ip],
        check=False,
    )  # fmt: skip
    return f"rc={res.returncode} {res.stdout} {res.stderr}"


def test_ping_with_df_passes_at_the_largest_size_and_not_one_byte_more(world: World) -> None:
    assert " 0% packet loss" in _ping_df(world, LARGEST_PING)
    over = _ping_df(world, LARGEST_PING + 1)
    assert "rc=1" in over and f"mtu = {WG_MTU}" in over, over


_SERVER = """
import hashlib, socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(30)
h, n = hashlib.sha256(), 0
while chunk := c.recv(65536):
    h.update(chunk); n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""

_CLIENT = """
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(len(data), hashlib.sha256(data).hexdigest())
"""


def test_a_10mb_tcp_transfer_completes_and_its_syns_are_clamped(world: World) -> None:
    lab, h1 = world.lab, world.mesh.hosts["h1"]
    cap = lab.capture(h1, "vpc0", "tcp port 5001 and tcp[tcpflags] & tcp-syn != 0")
    srv = lab.popen(world.c2, [sys.executable, "-c", _SERVER, str(PORT)], stdout=-1, stderr=-1)
    try:
        assert srv.stdout is not None and _readline_timeout(srv.stdout, 15) == "listening"
        sent = lab.run(world.c1, [sys.executable, "-c", _CLIENT, world.c2.ip, str(PORT),
                                  str(SIZE)], timeout=90).stdout.split()  # fmt: skip
        got = _readline_timeout(srv.stdout, 30).split()
    finally:
        lab.kill(srv)
    assert sent == got and sent[0] == str(SIZE)
    syns = cap.stop()
    # the containers' eth0 is 1500 (MSS 1460); on the tunnel both the SYN (clamped on h1) and
    # the SYN-ACK (clamped on h2) carry what a 1320 path carries
    mss = [int(m) for line in syns for m in re.findall(r"mss (\d+)", line)]
    assert len(mss) >= 2 and set(mss) == {MSS}, syns


def test_the_clamp_rule_is_in_the_loaded_table(world: World) -> None:
    listing = world.lab.run(
        world.mesh.hosts["h1"], ["nft", "list", "chain", "inet", "vpcctl", "forward"]
    ).stdout
    assert 'oifname "vpc0" tcp flags syn tcp option maxseg size set rt mtu' in listing
    assert 'iifname "vpc0" tcp flags syn tcp option maxseg size set rt mtu' in listing


def test_names_on_the_host_without_systemd_resolved_the_fallback_works(world: World) -> None:
    """No systemd-resolved here: `agent status` says so and names the fallback; the fallback
    itself (nameserver 127.0.0.1 in the host's resolv.conf, bind-mounted in the host's own
    mount namespace) makes getent answer the mesh's names on the host."""
    lab, mesh, h1 = world.lab, world.mesh, world.mesh.hosts["h1"]
    st = (world.status or mesh.status("h1"))["resolved"]
    assert st["mode"] == "fallback" and st["summary"].startswith("systemd-resolved: not running")
    text = mesh.agent(h1, "status").stdout
    assert "systemd-resolved: not running: fallback: " in text
    conf = h1.dir / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    lab.run(h1, ["mount", "--bind", str(conf), "/etc/resolv.conf"])
    out = lab.run(h1, ["getent", "hosts", "c2.prod.vpc.internal"]).stdout.split()
    assert out[:2] == [world.c2.ip, "c2.prod.vpc.internal"]
    h2_addr = str(mesh.inv.hosts["h2"].address)
    assert lab.run(h1, ["getent", "hosts", "h2.vpc.internal"]).stdout.split()[0] == h2_addr


def test_names_on_the_host_with_systemd_resolved_registered_and_reverted(world: World) -> None:
    """A fake resolvectl (recording its argv) on the agent's PATH: a real converge registers the
    routing domain on the first VPC bridge, `agent status` reads it back, `agent down` reverts
    it. The server it registers (the bridge's gateway) answers a query from that address, as
    resolved's would come, with the host's view (host names too)."""
    lab, mesh, h1 = world.lab, world.mesh, world.mesh.hosts["h1"]
    fake = FakeResolvectl(h1.dir / "fake")
    mesh.env["h1"] = fake.env(LAB_PATH)
    gw = str(mesh.inv.hosts["h1"].slices["prod"].network_address + 1)
    result = mesh.apply("h1")  # nothing changed on the host: the fast path asserts it too
    assert result["up_to_date"] is True, result
    assert result["resolved"]["summary"] == (
        f"systemd-resolved: registered ~vpc.internal on vb-prod ({gw})"
    )
    assert fake.argv == ["status", f"dns vb-prod {gw}", "domain vb-prod ~vpc.internal",
                         "default-route vb-prod false", "nta vb-prod vpc.internal"]  # fmt: skip
    status = json.loads(mesh.agent(h1, "status", "--json").stdout)["resolved"]
    assert status["registered"] is True and status["interface"] == "vb-prod"
    h2_addr = str(mesh.inv.hosts["h2"].address)
    ask = ["dig", "+short", "+time=2", "+tries=1", f"@{gw}", "-b", gw]
    assert lab.run(h1, [*ask, "h2.vpc.internal"]).stdout.split() == [h2_addr]
    assert lab.run(h1, [*ask, "c2.prod.vpc.internal"]).stdout.split() == [world.c2.ip]
    fake.clear()
    down = json.loads(mesh.agent(h1, "down", "--json").stdout)
    assert down["resolved_reverted"] is True
    assert fake.argv == ["status", "revert vb-prod"]
    assert fake.link("domain") is None
