"""The resolver's dispatch (one packet in, one answer out) with any client address, no sockets;
and the pure helpers around it: configuration, upstream lists, the agent's command line."""

from __future__ import annotations

import json
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from dnslib import CLASS, OPCODE, QTYPE, RCODE, DNSRecord

from tests.dns_helpers import ZONE, query
from vpcctl.core.errors import SpecError, ValidationError
from vpcctl.core.spec import ZoneData, ZoneVpc
from vpcctl.dns import zone
from vpcctl.dns.resolver import (
    Forward,
    Tables,
    dispatch,
    fast_answer,
    nameservers,
    parse_hostport,
    resolver_command,
    servfail,
    without_self,
    zone_from_text,
)

D = "vpc.internal"
PROD = "10.100.1.2"
DEV = "10.101.1.2"
OUTSIDER = "192.0.2.7"

REAL_ZONE = json.loads(
    json.dumps(ZONE)
    .replace("127.100.", "10.100.")
    .replace("127.101.", "10.101.")
    .replace('"127.100.0.0/16"', '"10.100.0.0/16"')
)


@pytest.fixture
def tables() -> Tables:
    return Tables(zone.build(zone_from_text(json.dumps(REAL_ZONE), "zone")))


def answer(tables: Tables, packet: bytes, client: str, max_size: int | None = None) -> DNSRecord:
    out = dispatch(tables, packet, client, max_size)
    assert isinstance(out, bytes), out
    return DNSRecord.parse(out)


def ask(tables: Tables, name: str, client: str, qtype: str = "A") -> DNSRecord:
    return answer(tables, bytes(query(name, qtype).pack()), client)


def a_records(r: DNSRecord) -> list[str]:
    return [str(x.rdata) for x in r.rr if x.rtype == QTYPE.A]


# ---------------------------------------------------------------------------------------------
# who gets what


@pytest.mark.parametrize("client", [OUTSIDER, "10.90.0.2", "172.17.0.2", "10.102.0.1"])
def test_clients_outside_every_vpc_and_loopback_are_refused(tables: Tables, client: str) -> None:
    for name in (f"web-1.prod.{D}", "web-1", "www.example.org", D):
        r = ask(tables, name, client)
        assert r.header.rcode == RCODE.REFUSED and r.header.ra == 0 and r.rr == []
        assert str(r.q.qname) == name + "."  # question still echoed


def test_forwarding_is_for_vpc_and_loopback_clients_only(tables: Tables) -> None:
    packet = bytes(query("www.example.org").pack())
    for client in (PROD, DEV, "127.0.0.1", "127.0.0.53"):
        out = dispatch(tables, packet, client)
        assert isinstance(out, Forward) and out.packet == packet
        assert out.question == packet[12:]
    assert DNSRecord.parse(dispatch(tables, packet, OUTSIDER)).header.rcode == RCODE.REFUSED


def test_views_by_source_address(tables: Tables) -> None:
    assert a_records(ask(tables, "web-1", PROD)) == ["10.100.1.2"]
    assert a_records(ask(tables, "web-1", DEV)) == ["10.101.1.2"]
    assert ask(tables, "db", DEV).header.rcode == RCODE.NXDOMAIN
    assert ask(tables, f"db.prod.{D}", DEV).header.rcode == RCODE.NXDOMAIN
    assert a_records(ask(tables, f"db.prod.{D}", "127.0.0.1")) == ["10.100.255.1"]
    assert isinstance(dispatch(tables, bytes(query("db").pack()), "127.0.0.1"), Forward)


def test_a_query_from_the_resolvers_own_gateway_address_gets_the_host_view() -> None:
    """systemd-resolved on the host asks the VPC gateway it was given (host/resolved.py) from
    that very address: every VPC's names, like loopback; the VPC's containers still get theirs."""
    gw = "10.100.1.1"
    t = Tables(zone.build(zone_from_text(json.dumps(REAL_ZONE), "zone")), own=frozenset({gw}))
    assert t.view_of(gw) is t.host
    assert a_records(ask(t, f"db.prod.{D}", gw)) == ["10.100.255.1"]
    assert a_records(ask(t, f"web-1.dev.{D}", gw)) == ["10.101.1.2"]  # another VPC's name too
    assert a_records(ask(t, "web-1", PROD)) == ["10.100.1.2"]
    assert ask(t, f"web-1.dev.{D}", PROD).header.rcode == RCODE.NXDOMAIN


def test_non_in_class_and_zone_transfers_are_refused(tables: Tables) -> None:
    q = query(f"web-1.prod.{D}")
    q.q.qclass = CLASS.CH
    assert answer(tables, bytes(q.pack()), PROD).header.rcode == RCODE.REFUSED
    for qtype in ("AXFR", "IXFR"):
        assert ask(tables, D, "127.0.0.1", qtype).header.rcode == RCODE.REFUSED


# ---------------------------------------------------------------------------------------------
# malformed and unusual queries


def test_responses_and_runts_are_dropped(tables: Tables) -> None:
    reply = bytes(query("web-1").reply().pack())
    assert dispatch(tables, reply, PROD) is None  # QR set: never answer an answer
    for runt in (b"", b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00"):
        assert dispatch(tables, runt, PROD) is None


def test_garbage_after_a_header_is_formerr_with_the_id(tables: Tables) -> None:
    for packet in (
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05web",  # cut in the name
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # loop
        b"\xab\xcd\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # 2 questions
        b"\xab\xcd\x01\x00\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # answers in it
    ):
        r = answer(tables, packet, PROD)
        assert r.header.id == 0xABCD and r.header.rcode == RCODE.FORMERR and r.header.qr == 1


@pytest.mark.parametrize("client", [PROD, "127.0.0.1", OUTSIDER])
@pytest.mark.parametrize(
    "name",
    [
        b"\x40" + b"a" * 64 + b"\x00",  # one label of 64 octets
        b"\x3f" + b"a" * 63 + b"\x40" + b"b" * 64 + b"\x00",  # the second label too long
        b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00",  # 257 octets in all
        b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00",
        b"".join(b"\x01x" for _ in range(128)) + b"\x00",  # 128 labels, 257 octets
    ],
)
def test_oversized_labels_and_names_are_formerr_not_silence(
    tables: Tables, name: bytes, client: str
) -> None:
    packet = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    r = answer(tables, packet, client)
    assert r.header.id == 0xABCD and r.header.rcode == RCODE.FORMERR and r.header.qr == 1


def test_the_longest_legal_name_is_answered(tables: Tables) -> None:
    # 3 labels of 63 + one of 61 = 255 octets on the wire with the root
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    packet = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    assert isinstance(dispatch(tables, packet, PROD), Forward)  # out of zone: forwarded
    assert answer(tables, packet, OUTSIDER).header.rcode == RCODE.REFUSED


def test_other_opcodes_are_notimp(tables: Tables) -> None:
    q = query("web-1")
    q.header.opcode = OPCODE.STATUS
    assert answer(tables, bytes(q.pack()), PROD).header.rcode == RCODE.NOTIMP


def test_two_opt_records_are_formerr(tables: Tables) -> None:
    q = query("web-1", edns=1232)
    q.add_ar(q.ar[0])
    assert answer(tables, bytes(q.pack()), PROD).header.rcode == RCODE.FORMERR


def test_do_bit_is_copied(tables: Tables) -> None:
    q = query("web-1", edns=1232)
    q.ar[0].ttl = 0x8000
    r = answer(tables, bytes(q.pack()), PROD)
    assert r.ar[0].ttl & 0x8000 and a_records(r) == ["10.100.1.2"]


def test_rd_and_cd_are_copied(tables: Tables) -> None:
    q = query("web-1")
    q.header.rd = 0
    q.header.cd = 1
    r = answer(tables, bytes(q.pack()), PROD)
    assert (r.header.rd, r.header.cd, r.header.aa) == (0, 1, 1)


# ---------------------------------------------------------------------------------------------
# the fast path is the slow path, remembered


@pytest.mark.parametrize(
    ("name", "qtype", "edns"),
    [
        ("web-1", "A", None),
        ("WeB-1", "A", None),
        (f"web-1.prod.{D}", "A", 1232),
        (f"WEB-1.PROD.{D.upper()}", "A", 4096),
        ("web-1", "AAAA", None),
        (f"nope.prod.{D}", "A", None),
        ("_postgres._tcp.db", "SRV", 512),
        (D, "SOA", None),
        ("2.1.100.10.in-addr.arpa", "PTR", None),
    ],
)
def test_a_remembered_answer_is_byte_for_byte_the_computed_one(
    tables: Tables, name: str, qtype: str, edns: int | None
) -> None:
    packet = bytes(query(name, qtype, edns, ident=0x1234).pack())
    assert fast_answer(tables, packet, PROD) is None
    first = dispatch(tables, packet, PROD)
    assert isinstance(first, bytes)
    again = fast_answer(tables, packet, PROD)
    assert again == first
    other = bytes(query(name.swapcase(), qtype, edns, ident=0x4321).pack())  # 0x20 and new ID
    remembered = fast_answer(tables, other, PROD)
    assert remembered is not None and remembered[:2] == b"\x43\x21"
    end = len(other) - (11 if edns else 0)
    assert remembered[12:end] == other[12:end]  # the question as asked
    # computed afresh, names elsewhere may compress differently against another case: the
    # same answer all the same, names compared without case
    fresh = dispatch(Tables(tables.zone), other, PROD)
    assert isinstance(fresh, bytes)
    assert str(DNSRecord.parse(fresh)).lower() == str(DNSRecord.parse(remembered)).lower()


def test_answers_are_remembered_per_view(tables: Tables) -> None:
    packet = bytes(query("web-1").pack())
    dispatch(tables, packet, PROD)
    assert fast_answer(tables, packet, PROD) is not None
    assert fast_answer(tables, packet, DEV) is None
    assert a_records(answer(tables, packet, DEV)) == ["10.101.1.2"]


def test_forwards_and_refusals_are_never_remembered(tables: Tables) -> None:
    for name, client in (("www.example.org", PROD), ("web-1", OUTSIDER)):
        packet = bytes(query(name).pack())
        dispatch(tables, packet, client)
        assert fast_answer(tables, packet, client) is None
    assert tables.cached == 0


def test_the_memory_is_bounded(tables: Tables) -> None:
    small = Tables(tables.zone, cache_limit=10)
    for i in range(35):
        dispatch(small, bytes(query(f"n{i}.prod.{D}").pack()), PROD)
        assert small.cached <= 10
    assert a_records(ask(small, "web-1", PROD)) == ["10.100.1.2"]


def test_tcp_gets_the_whole_answer(tables: Tables) -> None:
    ips = tuple(("big", IPv4Address(f"10.100.3.{i}")) for i in range(1, 61))
    prod = ZoneVpc("prod", IPv4Network("10.100.0.0/16"), ips, ())
    z = zone.build(ZoneData(D, 5, IPv4Network("10.90.0.0/24"), (), (prod,)))
    big = Tables(z)
    packet = bytes(query("big").pack())
    udp = answer(big, packet, PROD)
    assert udp.header.tc == 1 and udp.rr == []
    assert len(answer(big, packet, PROD, max_size=65535).rr) == 60


def test_servfail_echoes_the_question_and_edns(tables: Tables) -> None:
    packet = bytes(query("www.example.org", edns=1232).pack())
    fwd = dispatch(tables, packet, PROD)
    assert isinstance(fwd, Forward)
    r = DNSRecord.parse(servfail(fwd))
    assert r.header.rcode == RCODE.SERVFAIL and r.header.id == 4242
    assert str(r.q.qname) == "www.example.org." and [a.rtype for a in r.ar] == [QTYPE.OPT]


# ---------------------------------------------------------------------------------------------
# configuration helpers


def test_parse_hostport() -> None:
    assert parse_hostport("10.100.1.1", "--listen") == ("10.100.1.1", 53)
    assert parse_hostport("127.0.0.1:5353", "--listen") == ("127.0.0.1", 5353)
    assert parse_hostport("127.0.0.1:0", "--listen", any_port=True) == ("127.0.0.1", 0)
    for bad in ("localhost", "10.0.0.1:x", "10.0.0.1:70000", "::1", "10.0.0.1:0"):
        with pytest.raises(ValidationError):
            parse_hostport(bad, "--upstream")


def test_nameservers_from_resolv_conf() -> None:
    text = (
        "# generated\nsearch lan\nnameserver 192.0.2.53\nnameserver  2001:db8::1\n"
        "nameserver 198.51.100.53 # second\n;nameserver 10.0.0.1\noptions ndots:2\nnameserver\n"
    )
    assert nameservers(text) == [("192.0.2.53", 53), ("198.51.100.53", 53)]


def test_the_resolver_never_forwards_to_itself() -> None:
    listen = [("127.0.0.1", 53), ("10.100.1.1", 53)]
    ups = [("127.0.0.1", 53), ("10.100.1.1", 53), ("127.0.0.53", 53), ("192.0.2.53", 53)]
    kept, dropped = without_self(ups, listen, is_local=lambda a: True)
    assert kept == [("127.0.0.53", 53), ("192.0.2.53", 53)]
    assert dropped == [("127.0.0.1", 53), ("10.100.1.1", 53)]
    # listening on 0.0.0.0:53 covers every local address on port 53
    local = {"127.0.0.1", "127.0.0.53", "10.100.1.1"}
    kept, _ = without_self(ups, [("0.0.0.0", 53)], is_local=lambda a: a in local)
    assert kept == [("192.0.2.53", 53)]
    kept, _ = without_self([("127.0.0.1", 5353)], listen, is_local=lambda a: True)
    assert kept == [("127.0.0.1", 5353)]  # another port: another server


def test_resolver_command_listens_on_each_gateway_and_loopback() -> None:
    argv = resolver_command(["10.100.1.1", "10.101.1.1"], Path("/etc/vpcctl/zone.json"))
    assert argv == [
        sys.executable,
        "-m",
        "vpcctl",
        "dns",
        "serve",
        "--zone",
        "/etc/vpcctl/zone.json",
        "--listen",
        "10.100.1.1",
        "--listen",
        "10.101.1.1",
        "--listen",
        "127.0.0.1",
    ]
    assert resolver_command(["127.0.0.1:53"], upstreams=["192.0.2.53"], ttl=10)[-6:] == [
        "--listen",
        "127.0.0.1:53",
        "--upstream",
        "192.0.2.53",
        "--ttl",
        "10",
    ]


def test_zone_from_text_takes_a_host_spec_or_its_dns_part() -> None:
    dns = zone_from_text(json.dumps(REAL_ZONE), "z")
    assert zone_from_text(json.dumps({"version": 1, "dns": REAL_ZONE}), "z") == dns
    assert [v.name for v in dns.vpcs] == ["prod", "dev"]
    for bad in ("", "{", "[]", json.dumps({"dns": {"domain": "x"}}), '"\\ud800"'):
        with pytest.raises(SpecError) as exc:
            zone_from_text(bad, "zone.json")
        assert exc.value.message.startswith("zone.json") and exc.value.hint
