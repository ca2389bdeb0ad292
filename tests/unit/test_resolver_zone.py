"""zone.py as the resolver uses it: reverse zones with their own SOA, shared layers, big zones."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from vpcctl.core.model import PortSpec
from vpcctl.core.spec import ZoneData, ZoneVpc
from vpcctl.dns import zone

D = "vpc.internal"
PROD = IPv4Address("10.100.1.2")
LOOP = IPv4Address("127.0.0.1")


def data(containers: int = 2) -> ZoneData:
    prod = ZoneVpc(
        "prod",
        IPv4Network("10.100.0.0/16"),
        tuple(
            (f"c{i}", IPv4Address(int(IPv4Address("10.100.1.2")) + i)) for i in range(containers)
        ),
        (("db", IPv4Address("10.100.255.1"), (PortSpec(5432, "tcp", "postgres"),)),),
    )
    odd = ZoneVpc("odd", IPv4Network("10.64.16.0/20"), (("x", IPv4Address("10.64.17.5")),), ())
    return ZoneData(
        D, 5, IPv4Network("10.90.0.0/24"), (("nas", IPv4Address("10.90.0.1")),), (prod, odd)
    )


@pytest.fixture(scope="module")
def z() -> zone.Zone:
    return zone.build(data())


def test_reverse_apexes_are_the_cidrs_rounded_to_octets() -> None:
    assert zone.reverse_apex(IPv4Network("10.100.0.0/16")) == "100.10.in-addr.arpa"
    assert zone.reverse_apex(IPv4Network("10.90.0.0/24")) == "0.90.10.in-addr.arpa"
    assert zone.reverse_apex(IPv4Network("10.64.16.0/20")) == "64.10.in-addr.arpa"
    assert zone.reverse_apex(IPv4Network("10.0.0.0/8")) == "10.in-addr.arpa"


def test_each_reverse_zone_has_its_soa_and_ns(z: zone.Zone) -> None:
    for apex in ("100.10.in-addr.arpa", "0.90.10.in-addr.arpa", "64.10.in-addr.arpa"):
        for client in (PROD, LOOP):
            soa = zone.answer(z, apex, "SOA", client)
            assert [r.name for r in soa.answers] == [apex]
            assert soa.answers[0].data[:2] == (f"ns.{D}", f"hostmaster.{D}")
            assert [r.data for r in zone.answer(z, apex, "NS", client).answers] == [(f"ns.{D}",)]


def test_negative_reverse_answers_carry_the_reverse_soa(z: zone.Zone) -> None:
    missing = zone.answer(z, "99.1.100.10.in-addr.arpa", "PTR", PROD)
    assert missing.rcode == "NXDOMAIN" and [r.name for r in missing.authority] == [
        "100.10.in-addr.arpa"
    ]
    nodata = zone.answer(z, "2.1.100.10.in-addr.arpa", "A", PROD)
    assert nodata.rcode == "NOERROR" and nodata.authority[0].name == "100.10.in-addr.arpa"
    # a partial name inside the network is ours as well
    assert zone.answer(z, "7.100.10.in-addr.arpa", "PTR", PROD).rcode == "NXDOMAIN"


def test_reverse_names_outside_our_networks_go_upstream(z: zone.Zone) -> None:
    for name in (
        "in-addr.arpa",
        "10.in-addr.arpa",
        "8.8.8.8.in-addr.arpa",
        "1.2.3.4.5.in-addr.arpa",
    ):
        assert zone.answer(z, name, "PTR", LOOP).rcode == "FORWARD", name
    # a /20 rounds down to a /16 apex: the rest of that /16 is not ours
    assert zone.answer(z, "1.1.64.10.in-addr.arpa", "PTR", LOOP).rcode == "FORWARD"
    assert zone.answer(z, "5.17.64.10.in-addr.arpa", "PTR", LOOP).answers[0].data == (f"x.odd.{D}",)


def test_the_host_view_shares_the_vpc_records(z: zone.Zone) -> None:
    vpc_view = z.vpc_views[0][2]
    name = f"c0.prod.{D}"
    assert z.host_view.records(name) is vpc_view.records(name)
    assert zone.answer(z, name, "A", LOOP).answers == zone.answer(z, name, "A", PROD).answers


def test_short_names_are_answered_under_the_name_asked(z: zone.Zone) -> None:
    for name in ("c0", "c0.prod", "C0.Prod."):
        ans = zone.answer(z, name, "A", PROD)
        assert [(r.name, r.data) for r in ans.answers] == [(zone.normalize(name), ("10.100.1.2",))]
    srv = zone.answer(z, "_postgres._tcp.db", "SRV", PROD)
    assert [r.name for r in srv.answers] == ["_postgres._tcp.db"]


def test_view_names_lists_every_name_with_its_types(z: zone.Zone) -> None:
    names = z.vpc_views[0][2].names
    assert names[f"c0.prod.{D}"] == {"A": zone.answer(z, f"c0.prod.{D}", "A", PROD).answers}
    assert names[f"prod.{D}"] == {}  # empty non-terminal
    assert "SOA" in names[D] and "NS" in names[D]
    assert f"x.odd.{D}" not in names and f"x.odd.{D}" in z.host_view.names


def test_a_10000_name_zone_builds_and_answers() -> None:
    """A zone of 10,000 containers builds and answers; how fast is bench/dns.py's business (a
    timed unit test fails on a loaded CI box and proves little)."""
    z = zone.build(data(10_000))
    assert zone.answer(z, "c9999", "A", PROD).answers[0].data == (str(IPv4Address("10.100.40.17")),)
    assert zone.names((z.host_view,)) > 20_000
