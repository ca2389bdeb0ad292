"""Names: what the resolver answers to whom, straight from the inventory (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.builders import homelab
from vpcctl.admin.render import render, zone_data
from vpcctl.core.spec import zone_from_dict, zone_to_dict
from vpcctl.dns import zone
from vpcctl.dns.zone import Answer, Record, answer, reverse_name

PROD = IPv4Address("10.100.0.2")  # prod/web-1
STAGING = IPv4Address("10.200.1.2")  # staging/web-1
LOOPBACK = IPv4Address("127.0.0.1")
D = "vpc.internal"


@pytest.fixture(scope="module")
def z() -> zone.Zone:
    return zone.build(zone_data(homelab()))


def a(z: zone.Zone, name: str, client: IPv4Address, qtype: str = "A") -> Answer:
    return answer(z, name, qtype, client)


def addresses(ans: Answer) -> list[str]:
    assert ans.rcode == "NOERROR", ans
    return [str(r.data[0]) for r in ans.answers]


def test_container_service_and_host_records(z: zone.Zone) -> None:
    assert addresses(a(z, f"db-1.prod.{D}", PROD)) == ["10.100.1.2"]
    assert addresses(a(z, f"db.prod.{D}", PROD)) == ["10.100.255.1"]  # the VIP
    assert addresses(a(z, f"nas.{D}", LOOPBACK)) == ["10.90.0.1"]
    assert addresses(a(z, f"vps2.{D}", LOOPBACK)) == ["10.90.0.3"]
    assert a(z, f"db-1.prod.{D}", PROD).answers[0].ttl == 5


def test_names_are_case_insensitive_and_may_end_in_a_dot(z: zone.Zone) -> None:
    assert addresses(a(z, "DB-1.Prod.VPC.Internal.", PROD)) == ["10.100.1.2"]


def test_short_forms_answer_inside_the_vpc(z: zone.Zone) -> None:
    assert addresses(a(z, "db-1", PROD)) == ["10.100.1.2"]
    assert addresses(a(z, "db-1.prod", PROD)) == ["10.100.1.2"]
    assert addresses(a(z, "db", PROD)) == ["10.100.255.1"]
    assert addresses(a(z, "cache", STAGING)) == ["10.200.255.1"]


def test_the_same_short_name_means_the_client_s_own_vpc(z: zone.Zone) -> None:
    assert addresses(a(z, "web-1", PROD)) == ["10.100.0.2"]
    assert addresses(a(z, "web-1", STAGING)) == ["10.200.1.2"]


@pytest.mark.parametrize(
    "name", ["db-1", "db-1.prod", f"db-1.prod.{D}", "db", "db.prod", f"db.prod.{D}", "prod"]
)
def test_another_vpc_gets_nxdomain(z: zone.Zone, name: str) -> None:
    ans = a(z, name, STAGING)
    assert ans.rcode == "NXDOMAIN"
    assert ans.answers == () and ans.authority == (z.soa,)


def test_vpc_clients_do_not_see_host_names(z: zone.Zone) -> None:
    assert a(z, f"nas.{D}", PROD).rcode == "NXDOMAIN"


def test_loopback_sees_every_vpc_in_full_and_every_host(z: zone.Zone) -> None:
    assert addresses(a(z, f"web-1.prod.{D}", LOOPBACK)) == ["10.100.0.2"]
    assert addresses(a(z, f"web-1.staging.{D}", LOOPBACK)) == ["10.200.1.2"]
    assert addresses(a(z, f"cache.staging.{D}", LOOPBACK)) == ["10.200.255.1"]
    # the host itself is in no VPC: short forms mean nothing there and go upstream
    assert a(z, "web-1", LOOPBACK).rcode == "FORWARD"
    assert a(z, "web-1.prod", LOOPBACK).rcode == "FORWARD"


@pytest.mark.parametrize("client", ["192.0.2.1", "10.90.0.2", "10.101.0.1", "172.17.0.2"])
def test_unknown_sources_are_refused(z: zone.Zone, client: str) -> None:
    assert a(z, f"db-1.prod.{D}", IPv4Address(client)) == Answer("REFUSED")
    assert a(z, "example.com", IPv4Address(client)) == Answer("REFUSED")


@pytest.mark.parametrize("client", [PROD, STAGING, LOOPBACK])
def test_names_outside_the_zone_are_forwarded(z: zone.Zone, client: IPv4Address) -> None:
    assert a(z, "example.com", client) == Answer("FORWARD")
    assert a(z, "db-1.prod.example.com", client) == Answer("FORWARD")
    assert a(z, reverse_name(IPv4Address("8.8.8.8")), client, "PTR") == Answer("FORWARD")


@pytest.mark.parametrize(
    ("name", "qtype", "client"),
    [
        (f"db-1.prod.{D}", "AAAA", PROD),
        ("db-1", "TXT", PROD),
        (f"prod.{D}", "A", PROD),  # empty non-terminal
        (f"prod.{D}", "A", LOOPBACK),
        (f"_tcp.db.prod.{D}", "SRV", PROD),
        (f"nas.{D}", "AAAA", LOOPBACK),
        (D, "A", PROD),
    ],
)
def test_existing_name_without_the_type_is_nodata_with_soa(
    z: zone.Zone, name: str, qtype: str, client: IPv4Address
) -> None:
    assert a(z, name, client, qtype) == Answer("NOERROR", authority=(z.soa,))


def test_missing_name_in_the_zone_is_nxdomain(z: zone.Zone) -> None:
    for client in (PROD, LOOPBACK):
        assert a(z, f"nope.prod.{D}", client) == Answer("NXDOMAIN", authority=(z.soa,))
    assert a(z, "nope", PROD).rcode == "NXDOMAIN"  # bare names in a VPC are never forwarded


def test_ptr_for_each_address(z: zone.Zone) -> None:
    def ptr(address: str, client: IPv4Address) -> Answer:
        return a(z, reverse_name(IPv4Address(address)), client, "PTR")

    inv = homelab()
    for c in inv.containers.values():
        fqdn = f"{c.name}.{c.vpc}.{D}"
        assert [r.data for r in ptr(str(c.ip), LOOPBACK).answers] == [(fqdn,)]
        own = PROD if c.vpc == "prod" else STAGING
        other = STAGING if c.vpc == "prod" else PROD
        assert [r.data for r in ptr(str(c.ip), own).answers] == [(fqdn,)]
        assert ptr(str(c.ip), other).rcode == "NXDOMAIN"
    assert [r.data for r in ptr("10.100.255.1", PROD).answers] == [(f"db.prod.{D}",)]
    for h in inv.hosts.values():
        assert [r.data for r in ptr(str(h.address), LOOPBACK).answers] == [(f"{h.name}.{D}",)]
        assert ptr(str(h.address), PROD).rcode == "NXDOMAIN"
    assert ptr("10.100.0.99", PROD).rcode == "NXDOMAIN"  # in the VPC, not assigned


def test_srv_for_named_ports(z: zone.Zone) -> None:
    full = a(z, f"_postgres._tcp.db.prod.{D}", PROD, "SRV")
    assert [r.data for r in full.answers] == [(0, 0, 5432, f"db.prod.{D}")]
    short = a(z, "_postgres._tcp.db", PROD, "SRV")
    assert [r.data for r in short.answers] == [(0, 0, 5432, f"db.prod.{D}")]
    assert a(z, f"_postgres._tcp.db.prod.{D}", LOOPBACK, "SRV").answers == full.answers
    assert a(z, f"_redis._tcp.cache.staging.{D}", LOOPBACK, "SRV").answers[0].data[2] == 6379
    assert a(z, f"_postgres._udp.db.prod.{D}", PROD, "SRV").rcode == "NXDOMAIN"
    assert a(z, f"_postgres._tcp.db.prod.{D}", STAGING, "SRV").rcode == "NXDOMAIN"


def test_soa_ns_and_any(z: zone.Zone) -> None:
    soa = a(z, D, PROD, "SOA")
    assert soa.answers == (z.soa,)
    assert z.soa.data[:2] == (f"ns.{D}", f"hostmaster.{D}")
    assert a(z, D, LOOPBACK, "NS").answers == (z.ns,)
    assert addresses(a(z, "db-1", PROD, "ANY")) == ["10.100.1.2"]


def test_record_text() -> None:
    assert Record("db.prod.vpc.internal", "A", 5, ("10.100.255.1",)).text() == (
        "db.prod.vpc.internal. 5 IN A 10.100.255.1"
    )
    srv = Record("_pg._tcp.db.prod.vpc.internal", "SRV", 5, (0, 0, 5432, "db.prod.vpc.internal"))
    assert srv.text() == "_pg._tcp.db.prod.vpc.internal. 5 IN SRV 0 0 5432 db.prod.vpc.internal."


def test_malformed_reverse_names_do_not_crash(z: zone.Zone) -> None:
    for name in (
        "².0.100.10.in-addr.arpa",
        "01.0.100.10.in-addr.arpa",
        "1.2.0.100.10.in-addr.arpa",
    ):
        assert a(z, name, LOOPBACK, "PTR").rcode == "FORWARD"


def test_no_name_leaks_across_vpcs(z: zone.Zone) -> None:
    """Every name of every view, asked from inside each VPC: answers only ever carry that VPC's
    addresses and names."""
    inv = homelab()
    every = {n for _, _, view in z.vpc_views for n in view.names} | set(z.host_view.names)
    for vpc in inv.vpcs.values():
        client = vpc.cidr.network_address + 2
        for name in every:
            for qtype in ("A", "PTR", "SRV"):
                for r in a(z, name, client, qtype).answers:
                    if r.rtype == "A":
                        assert IPv4Address(r.data[0]) in vpc.cidr, (vpc.name, name, r)
                    elif r.rtype in ("PTR", "SRV"):
                        assert str(r.data[-1]).endswith(f".{vpc.name}.{D}"), (vpc.name, name, r)


def test_the_zone_in_the_host_spec_is_the_same_zone() -> None:
    data = zone_data(homelab())
    assert render(homelab(), "nas").dns == data
    assert zone_from_dict(zone_to_dict(data)) == data
