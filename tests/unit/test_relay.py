"""NAT to NAT: two hosts without an endpoint reach each other through a relay host (pure parts)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network

from tests.builders import homelab, public_key
from vpcctl.admin import edits, inventory
from vpcctl.admin.render import render_all, wg_quick
from vpcctl.core.model import Inventory, SshTarget, relays_of
from vpcctl.core.spec import from_json, to_json, wireguard_peers


def two_behind_nat(routing: str = "ipip") -> Inventory:
    return edits.add_host(homelab(routing), "nas2", SshTarget("nas2.lan"),
                          public_key=public_key("nas2"))  # fmt: skip


def test_each_nat_host_sends_the_other_through_the_first_dialable_host() -> None:
    inv = two_behind_nat()
    assert relays_of(inv) == {"nas": "vps1", "nas2": "vps1"}
    specs = render_all(inv)
    nas2 = inv.hosts["nas2"]
    (relayed,) = [p for p in specs["nas"].peers if p.name == "nas2"]
    assert relayed.relay == "vps1"  # still a mesh peer (the mesh table watches it)
    wg = {p.name: p for p in wireguard_peers(specs["nas"])}
    assert "nas2" not in wg  # ... but no WireGuard peer that could never handshake
    assert IPv4Network(f"{nas2.address}/32") in wg["vps1"].allowed_ips
    assert wg["vps1"].keepalive == 25
    # the relay itself has both as plain peers
    assert {p.name for p in wireguard_peers(specs["vps1"])} == {"nas", "nas2", "vps2"}
    assert all(p.relay is None for p in specs["vps1"].peers)
    assert from_json(to_json(specs["nas"])) == specs["nas"]
    assert "# nas2" not in wg_quick(specs["nas"])


def test_wireguard_routing_moves_the_slices_to_the_relay_too() -> None:
    inv = two_behind_nat("wireguard")
    wg = {p.name: p for p in wireguard_peers(render_all(inv)["nas2"])}
    for s in inv.hosts["nas"].slices.values():
        assert s in wg["vps1"].allowed_ips


def test_relay_setting_is_honoured_and_checked() -> None:
    inv = two_behind_nat()
    chosen = replace(inv, hosts={**inv.hosts, "nas": replace(inv.hosts["nas"], relay="vps2")})
    assert relays_of(chosen)["nas"] == "vps2"
    text = inventory.dump(chosen)
    assert 'relay = "vps2"' in text and inventory.dump(inventory.parse(text)) == text
    bad = replace(inv, hosts={**inv.hosts, "nas": replace(inv.hosts["nas"], relay="nas2")})
    assert any("not another host with an endpoint" in p.message for p in inventory.problems(bad))


def test_check_explains_the_relay_and_warns_when_there_is_none() -> None:
    (warning,) = [w for w in inventory.warnings(two_behind_nat()) if "behind NAT" in w]
    assert "nas via vps1, nas2 via vps1" in warning and "hop by hop" in warning
    inv = two_behind_nat()
    lonely = replace(inv, hosts={k: h for k, h in inv.hosts.items() if h.endpoint is None})
    assert relays_of(lonely) == {}
    assert any("give one of them a public endpoint" in w for w in inventory.warnings(lonely))
