"""Issue 13 item 5 in the lab: two hosts, each behind its own masquerading NAT router, reach each
other's containers through the relay host (the one host with an endpoint), and the relay's
underlay carries nothing but WireGuard UDP.

    relay 192.0.2.N ── switch ── r1 (NAT) ── n1 198.51.100.2 ── vb-prod ── c1
                             └── r2 (NAT) ── n2 203.0.113.2  ── vb-prod ── c2
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabContainer, ping
from tests.lab.mesh import Mesh, wait_ping

pytestmark = pytest.mark.lab


@dataclass
class World:
    mesh: Mesh
    c1: LabContainer
    c2: LabContainer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab()
    with Lab(tmp_path_factory.mktemp("relaylab")) as lab:
        m = Mesh(lab)
        r1 = lab.add_router("r1", "198.51.100.1/24")
        r2 = lab.add_router("r2", "203.0.113.1/24")
        m.add_host("relay")
        m.add_host("n1", nat=True, behind=r1, underlay_ip="198.51.100.2/24")
        m.add_host("n2", nat=True, behind=r2, underlay_ip="203.0.113.2/24")
        m.add_vpc("prod", "10.100.0.0/16")
        results = m.apply_all()
        assert all(r.get("rc") is None for r in results.values()), results
        c1 = m.add_container("prod", "c1", "n1")
        c2 = m.add_container("prod", "c2", "n2")
        results = m.apply_all()  # their names and addresses in every zone
        assert all(r.get("rc") is None for r in results.values()), results
        yield World(m, c1, c2)


def test_a_n1_sends_n2_through_the_relay_its_one_wireguard_peer(world: World) -> None:
    spec = world.mesh.spec("n1")
    (n2,) = [p for p in spec.peers if p.name == "n2"]
    assert n2.relay == "relay"
    wg = world.mesh.lab.run(world.mesh.hosts["n1"], ["wg", "show", "vpc0", "allowed-ips"]).stdout
    assert len(wg.splitlines()) == 1  # one WireGuard peer: the relay, carrying n2's addresses too


def test_b_containers_behind_two_nats_reach_each_other_through_the_relay(world: World) -> None:
    lab = world.mesh.lab
    relay = world.mesh.hosts["relay"]
    cap = lab.capture(relay, "eth0", "ip")  # every IPv4 packet (not ARP, not IPv6 RS noise)
    try:
        assert wait_ping(lab, world.c1, world.c2.ip, timeout=30), "c1 (n1) -> c2 (n2)"
        assert ping(lab, world.c2, world.c1.ip, count=5) == (5, 5)
    finally:
        lines = cap.stop()
    assert len(lines) >= 10, lines  # the pings crossed the relay's underlay ...
    not_wireguard = [ln for ln in lines if not ("UDP" in ln and ".51820" in ln)]
    assert not_wireguard == [], not_wireguard[:5]  # ... as WireGuard UDP only
    # and from the relay's own underlay address to the routers' (the NATed hosts), both ways
    assert any("192.0.2." in ln and ln.count("192.0.2.") == 2 for ln in lines), lines[:5]
