"""Issue 10 items 1-3: derived kernel names never collide, ranges that cannot work are refused,
DNS names stay within their limits. Pure: inventories in, problems out."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import replace
from ipaddress import IPv4Network

import pytest

from tests.builders import empty, homelab, public_key
from vpcctl.admin import edits, inventory
from vpcctl.core import names
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import (
    Vpc,
    parse_endpoint,
    parse_public_key,
    parse_range,
    parse_ssh,
)

NET = IPv4Network


def _problems(inv: object) -> list[str]:
    return [p.message for p in inventory.problems(inv, "vpc.toml")]  # type: ignore[arg-type]


def _colliding_pair() -> tuple[str, str]:
    """Two long VPC names with the same first 7 characters and the same 16-bit checksum: their
    shortened bridge names are equal (found by search, so the test shows a real collision)."""
    seen: dict[int, str] = {}
    for n in itertools.count():
        name = f"product-{n:06d}"
        digest = zlib.crc32(name.encode()) & 0xFFFF
        if digest in seen:
            return seen[digest], name
        seen[digest] = name
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# 1. kernel names


def test_every_derived_name_fits_ifnamsiz_and_has_one_home() -> None:
    assert names.bridge_name("prod") == "vb-prod"
    assert names.tunnel_name("vpc0") == "vpc0-ipip"
    assert names.docker_network_name("prod") == "vpc-prod"
    assert len(names.bridge_name("a" * 63)) == names.MAX_IFNAME
    assert len(names.tunnel_name("a" * 15)) == names.MAX_IFNAME


def test_a_constructed_bridge_collision_is_refused_with_a_hint() -> None:
    a, b = _colliding_pair()
    assert a != b and names.bridge_name(a) == names.bridge_name(b)
    inv = edits.add_vpc(homelab(), a, NET("10.50.0.0/16"))
    with_b = edits.add_vpc(inv, b, NET("10.51.0.0/16"))
    found = inventory.problems(with_b, "vpc.toml")
    assert any(
        f"the bridge of VPC {b} would be {names.bridge_name(b)!r}" in p.message for p in found
    ), found
    hint = next(p.hint for p in found if "bridge" in p.message)
    assert hint is not None and "rename" in hint
    assert _problems(inv) == []  # one of them alone is fine


def test_a_short_vpc_name_that_equals_another_s_shortened_bridge_is_refused() -> None:
    long_name = "abcdefghijklmnop"
    short = names.bridge_name(long_name).removeprefix("vb-")  # "abcdefg-XXXX", 12 characters
    assert names.bridge_name(short) == names.bridge_name(long_name)
    inv = edits.add_vpc(homelab(), long_name, NET("10.50.0.0/16"))
    inv = edits.add_vpc(inv, short, NET("10.51.0.0/16"))
    assert any("would be" in m and "already the bridge of VPC" in m for m in _problems(inv))


@pytest.mark.parametrize(
    ("interface", "says"),
    [
        ("lo", "system interface name"),
        ("docker0", "system interface name"),
        ("eth0", "system interface name"),
        ("wg0", "system interface name"),
        ("tunl0", "system interface name"),
        ("br-0123456789a", "system interface name"),
        ("vb-prod", "looks like a name vpcctl derives for a bridge"),
        ("x-ipip", "looks like a name vpcctl derives for a tunnel"),
    ],
)
def test_the_interface_cannot_take_a_system_or_derived_name(interface: str, says: str) -> None:
    inv = homelab()
    inv = replace(inv, mesh=replace(inv.mesh, interface=interface))
    assert any(says in m for m in _problems(inv)), _problems(inv)


def test_a_vpc_named_after_a_system_bridge_family_is_refused() -> None:
    # "vb-" + name can never be reserved today; the check still runs on every derived name
    assert not any(names.reserved(n) for n, _ in names.kernel_names("vpc0", ["prod", "x" * 40]))


def test_check_reports_a_collision_a_hand_edit_made(text_with_collision: str) -> None:
    raw = inventory.parse_toml(text_with_collision, "vpc.toml")
    found = _problems(inventory.from_dict(raw, "vpc.toml"))
    assert any("would be" in m and "already the bridge of VPC" in m for m in found), found


@pytest.fixture
def text_with_collision() -> str:
    a, b = _colliding_pair()
    inv = edits.add_vpc(homelab(), a, NET("10.50.0.0/16"))
    text = inventory.dump(inv)
    # a hand edit (or a merge) adds the second VPC's table
    return (
        text
        + f'\n[vpcs.{b}]\ncidr = "10.51.0.0/16"\nslice_prefix = 24\nservices = "10.51.255.0/24"\n'
    )


# ---------------------------------------------------------------------------------------------
# 2. address ranges


@pytest.mark.parametrize(
    ("cidr", "says"),
    [
        ("0.0.0.0/0", "every IPv4 address"),
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("127.1.0.0/16", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/24", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "reserved"),
        ("0.0.0.0/1", "unspecified"),
        ("128.0.0.0/1", "link-local"),
    ],
)
def test_ranges_that_cannot_work_are_refused(cidr: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as info:
        parse_range(cidr, "--cidr")
    assert info.value.hint


def test_a_public_range_is_a_warning_not_an_error() -> None:
    inv = edits.add_vpc(homelab(), "pub", parse_range("8.8.0.0/16", "--cidr"))
    assert _problems(inv) == []
    assert any("8.8.0.0/16 is a public range" in w for w in inventory.warnings(inv))
    assert not any("public range" in w for w in inventory.warnings(homelab()))


def test_a_vpc_range_holding_a_host_s_endpoint_or_ssh_address_is_refused() -> None:
    inv = edits.add_vpc(homelab(), "wide", NET("203.0.113.0/24"), slice_prefix=28)  # vps1's
    found = _problems(inv)
    assert any("contains 203.0.113.10, the address in hosts.vps1.endpoint" in m for m in found)
    assert any("contains 203.0.113.10, the address in hosts.vps1.ssh" in m for m in found)
    mesh = empty(mesh_cidr="198.51.100.0/24")
    mesh = edits.add_host(mesh, "a", parse_ssh("root@198.51.100.20", "--ssh"))
    assert any("mesh.cidr: 198.51.100.0/24 contains" in m for m in _problems(mesh))


def test_a_service_range_without_a_usable_vip_is_refused() -> None:
    inv = homelab()
    prod = inv.vpcs["prod"]
    for rng in ("10.100.255.0/31", "10.100.255.4/32"):
        bad = replace(inv, vpcs={**inv.vpcs, "prod": replace(prod, services=NET(rng))})
        assert any(f"{rng} has no usable VIP" in m for m in _problems(bad))
    assert isinstance(prod, Vpc)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1.2.3:51820", "invalid IPv4 address"),
        ("1.2.3.4.5:51820", "invalid IPv4 address"),
        ("01.2.3.4:51820", "invalid IPv4 address"),
        ("999.1.1.1:51820", "invalid IPv4 address"),
        ("0.0.0.0:51820", "not the address of one machine"),
        ("[::]:51820", "not the address of one machine"),
        ("224.0.0.1:51820", "not the address of one machine"),
        ("255.255.255.255:51820", "not the address of one machine"),
        ("host.123:51820", "invalid IPv4 address"),
    ],
)
def test_endpoint_hosts_that_are_not_one_machine_are_refused(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        parse_endpoint(value, "--endpoint")
    with pytest.raises(ValidationError, match=says):
        parse_ssh("root@" + value.rpartition(":")[0], "--ssh")


def test_dns_names_and_addresses_still_pass() -> None:
    assert parse_endpoint("vps1.example.org:51820", "e") == "vps1.example.org:51820"
    assert parse_endpoint("203.0.113.10:51820", "e") == "203.0.113.10:51820"
    assert parse_endpoint("1password.example:1", "e") == "1password.example:1"
    assert parse_ssh("nas", "s").host == "nas"


def test_the_all_zero_public_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="all-zero"):
        parse_public_key("A" * 43 + "=", "--public-key")
    assert parse_public_key(public_key("x"), "k") == public_key("x")


# ---------------------------------------------------------------------------------------------
# 3. DNS names


def test_names_that_together_exceed_253_octets_are_refused() -> None:
    domain = ".".join(["d" * 63] * 3) + ".x"  # 193 characters
    inv = empty(domain=domain)
    inv = edits.add_host(inv, "h", parse_ssh("root@h.lan", "s"), public_key=public_key("h"))
    inv = edits.add_vpc(inv, "v" * 40, NET("10.100.0.0/16"))
    assert _problems(inv) == []  # 40 + 1 + 193 fits
    inv = edits.add_container(inv, "c" * 30, "v" * 40, "h")
    found = _problems(inv)
    assert any("over the DNS limit of 253" in m for m in found), found


def test_a_named_port_s_srv_name_counts_too() -> None:
    domain = ".".join(["d" * 63] * 3) + ".xy"
    inv = empty(domain=domain)
    inv = edits.add_host(inv, "h", parse_ssh("root@h.lan", "s"), public_key=public_key("h"))
    inv = edits.add_vpc(inv, "v" * 20, NET("10.100.0.0/16"))
    inv = edits.add_container(inv, "c" * 20, "v" * 20, "h")
    assert _problems(inv) == []
    from vpcctl.core.model import PortSpec

    inv = edits.add_service(inv, "s" * 20, "v" * 20, (PortSpec(80, "tcp", "p" * 15),), ())
    assert any("_ppppppppppppppp._tcp" in m or "over the DNS limit" in m for m in _problems(inv))
