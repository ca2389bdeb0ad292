"""The nftables table's MSS clamp (pure): which rules, on which interfaces, in which chain."""

from __future__ import annotations

import pytest

from tests.builders import homelab
from vpcctl.admin.render import render
from vpcctl.host import firewall

CLAMP = "tcp flags syn tcp option maxseg size set rt mtu"


def _chain(table: str, name: str) -> list[str]:
    lines = table.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end]]


@pytest.mark.parametrize(
    ("routing", "devs"),
    [("ipip", '"vpc0", "vpc0-ipip"'), ("wireguard", '"vpc0"')],
)
def test_forwarded_syns_into_and_out_of_the_tunnels_are_clamped_to_the_route_mtu(
    routing: str, devs: str
) -> None:
    spec = render(homelab(routing), "vps1")
    forward = _chain(firewall.ruleset(spec), "forward")
    # first, before any drop: a clamp must see every SYN that is forwarded at all
    assert forward[1:3] == [f"oifname {{ {devs} }} {CLAMP}", f"iifname {{ {devs} }} {CLAMP}"]
    assert firewall.tunnels(spec) == tuple(d.strip('"') for d in devs.split(", "))


def test_only_forwarded_traffic_is_clamped() -> None:
    table = firewall.ruleset(render(homelab(), "nas"))
    assert table.count(CLAMP) == 2
    for chain in ("input", "output_filter", "prerouting", "output", "postrouting"):
        assert not any(CLAMP in line for line in _chain(table, chain))
