"""Inventory -> HostSpec and wg-quick: the right peers, routes and keepalives; stable JSON; and
every rendered line well-formed (the real `wg-quick strip` accepts the configs)."""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import empty, homelab, ip, private_key, public_key
from tests.checks import WG_QUICK_ONLY, check_wg_quick
from vpcctl.admin import edits
from vpcctl.admin.render import render, render_all, wg_quick
from vpcctl.core.errors import NotFoundError, SpecError
from vpcctl.core.model import (
    VPC_MTU,
    WG_MTU,
    Inventory,
    PortSpec,
    parse_endpoint,
    parse_label,
    parse_ssh,
)
from vpcctl.core.spec import Encoder, from_json, to_json, wireguard_peers

NET = IPv4Network

# ---------------------------------------------------------------------------------------------
# the HostSpec


def test_nat_host_keeps_alive_toward_every_public_peer() -> None:
    spec = render(homelab(), "nas")
    assert spec.address == IPv4Interface("10.90.0.1/24")
    assert spec.mtu == WG_MTU and spec.port == 51820
    assert spec.public_key == public_key("nas")
    assert [(p.name, p.endpoint, p.keepalive) for p in spec.peers] == [
        ("vps1", "203.0.113.10:51820", 25),
        ("vps2", "198.51.100.20:51820", 25),
    ]


def test_public_host_dials_public_peers_and_waits_for_nat_peers() -> None:
    spec = render(homelab(), "vps1")
    assert [(p.name, p.endpoint, p.keepalive) for p in spec.peers] == [
        ("nas", None, 0),
        ("vps2", "198.51.100.20:51820", 0),
    ]


def test_ipip_routing_routes_remote_slices_through_the_tunnel() -> None:
    spec = render(homelab(), "vps1")
    assert spec.tunnel is not None
    assert (spec.tunnel.name, spec.tunnel.local, spec.tunnel.mtu) == (
        "vpc0-ipip",
        ip("10.90.0.2"),
        VPC_MTU,
    )
    # WireGuard only sees host-to-host packets
    assert all(p.allowed_ips == (NET(f"{p.address}/32"),) for p in spec.peers)
    assert [(str(r.dst), r.dev, str(r.via), r.onlink) for r in spec.routes] == [
        ("10.100.0.0/24", "vpc0-ipip", "10.90.0.1", True),
        ("10.200.0.0/24", "vpc0-ipip", "10.90.0.1", True),
        ("10.100.2.0/24", "vpc0-ipip", "10.90.0.3", True),
        ("10.200.2.0/24", "vpc0-ipip", "10.90.0.3", True),
    ]
    assert [(v.name, str(v.slice), str(v.gateway), v.bridge, v.mtu) for v in spec.vpcs] == [
        ("prod", "10.100.1.0/24", "10.100.1.1/24", "vb-prod", VPC_MTU),
        ("staging", "10.200.1.0/24", "10.200.1.1/24", "vb-staging", VPC_MTU),
    ]


def test_wireguard_routing_puts_slices_into_allowed_ips() -> None:
    spec = render(homelab(routing="wireguard"), "vps1")
    assert spec.tunnel is None
    nas = spec.peers[0]
    assert nas.allowed_ips == (NET("10.90.0.1/32"), NET("10.100.0.0/24"), NET("10.200.0.0/24"))
    assert {(str(r.dst), r.dev, r.via) for r in spec.routes} == {
        ("10.100.0.0/24", "vpc0", None),
        ("10.200.0.0/24", "vpc0", None),
        ("10.100.2.0/24", "vpc0", None),
        ("10.200.2.0/24", "vpc0", None),
    }
    assert all(v.mtu == WG_MTU for v in spec.vpcs)


@pytest.mark.parametrize(("routing", "vpc"), [("ipip", 1300), ("wireguard", 1320)])
def test_the_mesh_mtu_sets_every_mtu_below_it(routing: str, vpc: int) -> None:
    """An underlay of 1400 (README "MTU"): WireGuard 1400 - 80 = 1320; IPIP inside it 20 less."""
    spec = render(edits.set_mesh(homelab(routing), mtu=1320), "vps1")
    assert spec.mtu == 1320
    assert [v.mtu for v in spec.vpcs] == [vpc, vpc]
    assert (spec.tunnel.mtu if spec.tunnel else None) == (1300 if routing == "ipip" else None)
    assert from_json(to_json(spec), "spec") == spec


def test_services_map_vips_to_backend_addresses() -> None:
    spec = render(homelab(), "nas")
    assert [(s.vpc, s.name, str(s.vip), s.backends) for s in spec.services] == [
        ("prod", "db", "10.100.255.1", (ip("10.100.1.2"), ip("10.100.2.2"))),
        ("staging", "cache", "10.200.255.1", (ip("10.200.2.2"),)),
    ]
    assert spec.services[0].ports == (PortSpec(5432, "tcp", "postgres"), PortSpec(9187, "tcp"))


def test_hosts_without_a_key_are_left_out_of_peers_and_routes() -> None:
    inv = edits.add_host(homelab(), "mini", parse_ssh("mini.lan", "--ssh"))
    spec = render(inv, "vps1")
    assert "mini" not in [p.name for p in spec.peers]
    mini_slices = set(inv.hosts["mini"].slices.values())
    assert not [r for r in spec.routes if r.dst in mini_slices]
    assert render(inv, "mini").public_key is None


def test_render_unknown_host() -> None:
    with pytest.raises(NotFoundError, match="no host named 'nope'"):
        render(homelab(), "nope")


def test_full_mesh_peer_count() -> None:
    inv = empty(mesh_cidr="10.90.0.0/24")
    inv = edits.add_vpc(inv, "prod", NET("10.100.0.0/16"))
    for i in range(30):
        endpoint = f"192.0.2.{i + 1}:51820" if i % 2 else None
        inv = edits.add_host(
            inv, f"h{i}", parse_ssh(f"h{i}", "s"), endpoint=endpoint, public_key=public_key(f"{i}")
        )
    inv = edits.add_host(inv, "h30", parse_ssh("h30", "s"))  # no key yet: nobody's peer
    specs = render_all(inv)
    assert sum(len(s.peers) for s in specs.values()) == 30 * 29 + 30
    assert sum(len(s.routes) for s in specs.values()) == 30 * 29 + 30
    keyed = sorted(n for n, h in inv.hosts.items() if h.public_key)
    for name, spec in specs.items():
        others = [n for n in keyed if n != name]
        assert [p.name for p in spec.peers] == others
        assert [r.via for r in spec.routes] == [inv.hosts[n].address for n in others]
        assert [r.dst for r in spec.routes] == [inv.hosts[n].slices["prod"] for n in others]
        keepalive = 25 if inv.hosts[name].endpoint is None else 0
        assert [p.keepalive for p in spec.peers] == [
            keepalive if inv.hosts[n].endpoint else 0 for n in others
        ]
        assert spec == render(inv, name)


# ---------------------------------------------------------------------------------------------
# JSON


def test_json_round_trips_and_is_stable() -> None:
    inv = homelab()
    for name in inv.hosts:
        spec = render(inv, name)
        text = to_json(spec)
        assert text == to_json(render(homelab(), name))
        assert from_json(text) == spec
        assert from_json(text.encode()) == spec
        doc = json.loads(text)
        assert doc["interface"]["private_key_file"] == "private.key"
        assert "PrivateKey" not in text and 'private_key"' not in text


def test_one_encoder_for_all_specs_gives_the_same_text() -> None:
    specs = render_all(homelab())
    enc = Encoder()
    assert [enc.dumps(s) for s in specs.values()] == [to_json(s) for s in specs.values()]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.update(version=2), "unsupported HostSpec version"),
        (lambda d: d["interface"].update(private_key_file="../../etc/shadow"), "plain file name"),
        (lambda d: d["peers"][0].update(endpoint="1.2.3.4:5\n[Peer]"), "peers[0].endpoint"),
        (lambda d: d["peers"][0].update(public_key="x"), "peers[0].public_key"),
        (lambda d: d["routes"][0].update(dev="vpc0; rm -rf /"), "routes[0].dev"),
        (lambda d: d["vpcs"][0].update(gateway="10.100.0.1/²"), "vpcs[0].gateway"),
        (lambda d: d.update(routing="vxlan"), "routing"),
        (lambda d: d.pop("peers"), "missing 'peers'"),
    ],
)
def test_from_json_validates_everything(edit, says: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(to_json(render(homelab(), "nas")))
    edit(doc)
    with pytest.raises(SpecError) as info:
        from_json(json.dumps(doc), "nas.json")
    assert info.value.message.startswith("nas.json: ")
    assert says in info.value.message


# ---------------------------------------------------------------------------------------------
# wg-quick: every line well-formed, and the real wg-quick agrees


def _wg_quick_strip(tmp_path: Path, text: str) -> str:
    path = tmp_path / "vpc0.conf"  # wg-quick wants INTERFACE.conf
    path.write_text(text)
    path.chmod(0o600)
    done = subprocess.run(
        ["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize("routing", ["ipip", "wireguard"])
def test_wg_quick_configs_are_well_formed_and_wg_quick_strips_them(
    tmp_path: Path, routing: str
) -> None:
    inv = edits.add_host(homelab(routing), "mini", parse_ssh("mini.lan", "s"))  # not joined yet
    for name, spec in render_all(inv).items():
        for key in (None, private_key(name).to_base64()):
            text = wg_quick(spec, key)
            check_wg_quick(text, len(wireguard_peers(spec)))  # relayed NAT peers: on the relay
            stripped = _wg_quick_strip(tmp_path, text)
            expected = [
                line
                for line in text.splitlines()
                if line.partition(" = ")[0] not in WG_QUICK_ONLY or " = " not in line
            ]
            # wg-quick recognised exactly its own keys and passed everything else to wg unchanged
            assert stripped.rstrip("\n").splitlines() == expected
            assert ("PrivateKey = " in stripped) == (key is not None)
            assert ("Table = off" in text) == (routing == "ipip")


# ---------------------------------------------------------------------------------------------
# any inventory the parsers accept renders only well-formed lines

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda s: s[0] != "-" and s[-1] != "-"
)
ports = st.integers(1, 65535)
# a DNS name never ends in an all-numeric label (that is an IPv4 address, refused when malformed)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join).map(lambda h: h + ".lan")
endpoints = st.one_of(
    st.none(),
    st.builds(
        lambda a, p: f"{IPv4Address(a)}:{p}", st.integers(1, 2**28 * 14 - 1), ports
    ),  # unicast
    st.builds(lambda h, p: f"{h}:{p}", hostnames, ports),
    st.builds(
        lambda a, scope, p: f"[{IPv6Address(a)}{scope}]:{p}",
        st.integers(1, 2**120 * 0xFF - 1),  # not ::, not multicast
        st.sampled_from(["", "%eth0", "%wg_0.1"]),
        ports,
    ),
)


@given(
    hosts=st.lists(st.tuples(labels, endpoints), min_size=1, max_size=6, unique_by=lambda t: t[0]),
    vpc=labels,
    container=labels,
    domain=st.lists(labels, min_size=1, max_size=3).map(".".join),
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_anything_the_parsers_accept_renders_well_formed(
    hosts: list[tuple[str, str | None]], vpc: str, container: str, domain: str
) -> None:
    inv: Inventory = empty(domain=domain)
    names = [h for h, _ in hosts]
    if vpc in names:
        vpc = "v" + vpc[:19]
    for name, endpoint in hosts:
        inv = edits.add_host(
            inv,
            parse_label(name, "NAME"),
            parse_ssh(f"root@{name}.lan", "--ssh"),
            endpoint=None if endpoint is None else parse_endpoint(endpoint, "--endpoint"),
            public_key=public_key(name),
        )
    if vpc not in names:
        inv = edits.add_vpc(inv, parse_label(vpc, "NAME"), NET("10.100.0.0/16"))
        inv = edits.add_container(inv, parse_label(container, "NAME"), vpc, names[0])
        service = f"{container}-svc"
        inv = edits.add_service(inv, service, vpc, (PortSpec(80, "tcp", "http"),), (container,))
    for spec in render_all(inv).values():
        check_wg_quick(wg_quick(spec), len(wireguard_peers(spec)))
        assert from_json(to_json(spec)) == spec
