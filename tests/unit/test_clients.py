"""Roaming clients, the pure parts: allocation, edits, the inventory file, render, firewall, zone
and the printed config."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.builders import homelab, public_key
from vpcctl.admin import allocate, edits, inventory
from vpcctl.admin.render import client_config, render, render_all
from vpcctl.core.errors import NotFoundError, ValidationError
from vpcctl.core.model import Inventory, SshTarget
from vpcctl.core.spec import from_json, to_json, wireguard_peers
from vpcctl.dns import zone as zone_mod
from vpcctl.host.firewall import ruleset

PRIVATE = "qOngOO+e15Jn/mRNong+cUUYIW5BQN50+LiN1ZtCjU0="


def with_laptop(routing: str = "ipip") -> Inventory:
    return edits.add_client(homelab(routing), "laptop", "vps1", ("prod",), public_key("laptop"))


def test_client_addresses_come_from_the_top_and_hosts_skip_them() -> None:
    inv = with_laptop()
    inv = edits.add_client(inv, "phone", "vps2", (), public_key("phone"))
    assert inv.clients["laptop"].address == IPv4Address("10.90.0.254")
    assert inv.clients["phone"].address == IPv4Address("10.90.0.253")
    assert inv.clients["phone"].vpcs == ("prod", "staging")  # no --vpc: every VPC
    assert allocate.host_address(inv) == IPv4Address("10.90.0.4")
    with pytest.raises(Exception, match="client laptop"):
        allocate.host_address(inv, IPv4Address("10.90.0.254"))


def test_a_full_mesh_cidr_refuses_a_client() -> None:
    inv = edits.new("m", IPv4Network("10.90.0.0/30"), port=1, interface="vpc0",
                    domain="vpc.internal", routing="ipip")  # fmt: skip
    inv = edits.add_host(inv, "gw", SshTarget("gw"), endpoint="192.0.2.1:51820",
                         public_key=public_key("gw"))  # fmt: skip
    inv = edits.add_vpc(inv, "prod", IPv4Network("10.100.0.0/16"))
    inv = edits.add_client(inv, "a", "gw", (), public_key("a"))
    with pytest.raises(Exception, match="full"):
        edits.add_client(inv, "b", "gw", (), public_key("b"))


@pytest.mark.parametrize(
    ("name", "via", "vpcs", "error", "text"),
    [
        ("laptop", "vps1", ("prod",), ValidationError, "already exists"),
        ("tab", "nope", (), NotFoundError, "no host named"),
        ("tab", "nas", (), ValidationError, "no endpoint"),
        ("tab", "vps1", ("nope",), NotFoundError, "no VPC named"),
    ],
)
def test_add_client_refuses(
    name: str, via: str, vpcs: tuple[str, ...], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        edits.add_client(with_laptop(), name, via, vpcs, public_key(name))


def test_the_file_keeps_public_key_and_address_only_and_round_trips() -> None:
    inv = with_laptop()
    text = inventory.dump(inv)
    assert '[clients.laptop]\nvia = "vps1"\naddress = "10.90.0.254"' in text
    assert inventory.dump(inventory.parse(text)) == text
    assert inventory.problems(inv) == []


def test_problems_name_a_gateway_that_lost_its_endpoint_and_a_shared_address() -> None:
    inv = with_laptop()
    lost = replace(inv, hosts={**inv.hosts, "vps1": replace(inv.hosts["vps1"], endpoint=None)})
    assert any("no endpoint" in p.message for p in inventory.problems(lost))
    clash = replace(inv, clients={"laptop": replace(inv.clients["laptop"],
                                                    address=IPv4Address("10.90.0.1"))})  # fmt: skip
    assert any("also the address of host" in p.message for p in inventory.problems(clash))


def test_rm_host_and_rm_vpc_account_for_clients() -> None:
    inv = with_laptop()
    with pytest.raises(ValidationError, match="gateway of clients: laptop"):
        edits.rm_host(inv, "vps1")
    assert "laptop" not in edits.rm_host(inv, "vps1", force=True).clients
    with pytest.raises(ValidationError, match="client laptop"):
        edits.rm_vpc(inv, "prod")
    assert "laptop" not in edits.rm_vpc(inv, "prod", force=True).clients
    gone = edits.rm_client(inv, "laptop")
    assert gone.clients == {}
    with pytest.raises(NotFoundError):
        edits.rm_client(gone, "laptop")


def test_gateway_gets_the_peer_others_route_the_address_via_it_ipip() -> None:
    specs = render_all(with_laptop())
    gw = specs["vps1"]
    (c,) = gw.clients
    assert c.address == IPv4Address("10.90.0.254") and c.dns == IPv4Address("10.100.1.1")
    peer = wireguard_peers(gw)[-1]
    assert (peer.public_key, peer.allowed_ips) == (public_key("laptop"),
                                                   (IPv4Network("10.90.0.254/32"),))  # fmt: skip
    for other in ("nas", "vps2"):
        assert specs[other].clients == ()
        (route,) = [r for r in specs[other].routes if r.dst == IPv4Network("10.90.0.254/32")]
        assert route.via == IPv4Address("10.90.0.2") and route.onlink
    assert from_json(to_json(gw)) == gw


def test_wireguard_routing_puts_the_address_in_the_gateways_allowed_ips() -> None:
    spec = render(with_laptop("wireguard"), "nas")
    (vps1,) = [p for p in spec.peers if p.name == "vps1"]
    assert IPv4Network("10.90.0.254/32") in vps1.allowed_ips


def test_firewall_confines_the_client_to_its_vpcs_and_resolver() -> None:
    text = ruleset(render(with_laptop(), "vps1"))
    assert "ip saddr 10.90.0.254 ip daddr != { 10.100.0.0/16 } drop" in text
    assert "ip saddr 10.90.0.254 ip daddr 10.100.1.1 udp dport 53 accept" in text
    assert "ip saddr 10.90.0.254 drop" in text
    assert "ip saddr 10.90.0.254 ip daddr 10.100.255.1 tcp dport 5432 jump svc_prod_db" in text
    assert "10.90.0.254" not in ruleset(render(with_laptop(), "nas"))


def test_the_resolver_answers_the_client_its_vpcs_names_only() -> None:
    z = zone_mod.build(render(with_laptop(), "vps1").dns)
    laptop = IPv4Address("10.90.0.254")
    a = zone_mod.answer(z, "db-1.prod.vpc.internal", "A", laptop)
    assert [r.data for r in a.answers] == [("10.100.1.2",)]
    assert zone_mod.answer(z, "db-1", "A", laptop).answers  # short form of its first VPC
    assert zone_mod.answer(z, "cache-1.staging.vpc.internal", "A", laptop).rcode == "NXDOMAIN"
    assert zone_mod.answer(z, "db-1.prod.vpc.internal", "A", IPv4Address("10.90.0.253")).rcode == (
        "REFUSED"
    )


def test_the_config_holds_the_key_the_gateway_and_the_vpcs() -> None:
    text = client_config(with_laptop(), "laptop", PRIVATE)
    assert f"PrivateKey = {PRIVATE}" in text
    for line in ("Address = 10.90.0.254/32", "DNS = 10.100.1.1, prod.vpc.internal", "MTU = 1400",
                 f"PublicKey = {public_key('vps1')}", "Endpoint = 203.0.113.10:51820",
                 "AllowedIPs = 10.100.0.0/16", "PersistentKeepalive = 25"):  # fmt: skip
        assert line in text.splitlines()


@pytest.mark.parametrize(
    ("edit", "text"),
    [
        (lambda t: t.replace('vpcs = [\n    "prod",\n]', "vpcs = []"), "non-empty list"),
        (lambda t: t.replace('vpcs = [\n    "prod",\n]', 'vpcs = ["prod", "prod"]'), "distinct"),
        (lambda t: t.replace('via = "vps1"', 'via = "VPS 1"'), "not a valid host name"),
        (lambda t: t.replace('address = "10.90.0.254"', 'address = "10.90.0"'), "IPv4 address"),
        (lambda t: t.replace('address = "10.90.0.254"\n', ""), "address"),
        (lambda t: t.replace("[clients.laptop]", "[clients.laptop]\nprivate_key = 'x'"), "private"),
        (
            lambda t: t.replace(f'public_key = "{public_key("laptop")}"', 'public_key = "x"'),
            "not a WireGuard public key",
        ),
    ],
)
def test_a_hand_edited_client_table_is_one_clear_error(edit: object, text: str) -> None:
    original = inventory.dump(with_laptop())
    edited = edit(original)  # type: ignore[operator]
    assert edited != original
    with pytest.raises(ValidationError, match=text):
        inventory.parse(edited)
