"""The resolver over the wire: an in-process server on 127.0.0.1 (random port), real DNS packets.

VPC clients are played by sockets bound to 127.100.x (prod) and 127.101.x (dev): the test zone
puts those VPC CIDRs inside loopback (tests/dns_helpers.py). Sources outside every VPC and
loopback cannot be made on one machine without namespaces: REFUSED is tested at the dispatch
level (test_resolver_dispatch.py) and in the lab (tests/lab/test_dns_lab.py).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.dns_helpers import (
    DEV_CLIENT,
    HOST_CLIENT,
    PROD_CLIENT,
    UPSTREAM_ANSWER,
    ZONE,
    D,
    FakeUpstream,
    addresses,
    ask,
    exchange,
    query,
    recv_exact,
    running,
    write_zone,
    zone_with,
)
from tests.waiting import wait_until
from vpcctl.core.errors import VpcctlError
from vpcctl.core.spec import ZoneData, ZoneVpc
from vpcctl.dns.resolver import FORWARD_TIMEOUT, Config, Server


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "zone.json"
    write_zone(path)
    return path


@pytest.fixture
def port(zone_file: Path, upstream: FakeUpstream) -> Iterator[int]:
    config = Config(zone_file=zone_file, listen=(("127.0.0.1", 0),), upstreams=(upstream.address,))
    with running(config) as (_server, p):
        yield p


# ---------------------------------------------------------------------------------------------
# views


def test_a_plain_dnslib_client_gets_an_answer(port: int) -> None:
    raw = DNSRecord.question(f"db.prod.{D}").send("127.0.0.1", port, timeout=3)
    assert addresses(DNSRecord.parse(raw)) == ["127.100.255.1"]
    raw = DNSRecord.question(f"db.prod.{D}").send("127.0.0.1", port, tcp=True, timeout=3)
    assert addresses(DNSRecord.parse(raw)) == ["127.100.255.1"]


def test_host_view_sees_every_vpc_in_full_and_the_hosts(port: int) -> None:
    r = ask(port, f"web-1.prod.{D}")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert addresses(r) == ["127.100.1.2"] and r.rr[0].ttl == 5
    assert addresses(ask(port, f"web-1.dev.{D}")) == ["127.101.1.2"]
    assert addresses(ask(port, f"nas.{D}")) == ["10.90.0.1"]
    assert addresses(ask(port, f"db.prod.{D}")) == ["127.100.255.1"]


def test_vpc_client_sees_its_own_names_full_and_short(port: int) -> None:
    for name in ("web-1", "web-1.prod", f"web-1.prod.{D}"):
        r = ask(port, name, source=PROD_CLIENT)
        assert addresses(r) == ["127.100.1.2"], name
        assert str(r.rr[0].rname) == name + "."  # the owner is the name asked
    assert addresses(ask(port, "db", source=PROD_CLIENT)) == ["127.100.255.1"]
    assert addresses(ask(port, "web-1", source=DEV_CLIENT)) == ["127.101.1.2"]


@pytest.mark.parametrize("name", ["db", "db-1", "db.prod", f"db.prod.{D}", f"db-1.prod.{D}"])
def test_another_vpcs_names_are_nxdomain_with_soa(port: int, name: str) -> None:
    r = ask(port, name, source=DEV_CLIENT)
    assert r.header.rcode == RCODE.NXDOMAIN and r.header.aa == 1
    assert r.rr == [] and [a.rtype for a in r.auth] == [QTYPE.SOA]
    assert str(r.auth[0].rname) == f"{D}."


def test_vpc_clients_do_not_see_host_names(port: int) -> None:
    assert ask(port, f"nas.{D}", source=PROD_CLIENT).header.rcode == RCODE.NXDOMAIN


def test_ptr(port: int) -> None:
    r = ask(port, "2.1.100.127.in-addr.arpa", "PTR", source=PROD_CLIENT)
    assert [str(a.rdata) for a in r.rr] == [f"web-1.prod.{D}."]
    assert ask(port, "1.255.100.127.in-addr.arpa", "PTR").rr[0].rdata.label == (
        b"db",
        b"prod",
        b"vpc",
        b"internal",
    )
    assert [str(a.rdata) for a in ask(port, "1.0.90.10.in-addr.arpa", "PTR").rr] == [f"nas.{D}."]
    other = ask(port, "2.1.101.127.in-addr.arpa", "PTR", source=PROD_CLIENT)
    assert other.header.rcode == RCODE.NXDOMAIN
    assert str(other.auth[0].rname) == "101.127.in-addr.arpa."  # the reverse zone's own SOA


def test_srv_for_named_ports(port: int) -> None:
    for name in ("_postgres._tcp.db", f"_postgres._tcp.db.prod.{D}"):
        r = ask(port, name, "SRV", source=PROD_CLIENT)
        assert [(a.rdata.port, str(a.rdata.target)) for a in r.rr] == [(5432, f"db.prod.{D}.")]


def test_soa_and_ns_at_the_apex(port: int) -> None:
    soa = ask(port, D, "SOA", source=PROD_CLIENT)
    assert soa.header.aa == 1 and [a.rtype for a in soa.rr] == [QTYPE.SOA]
    assert str(soa.rr[0].rdata.mname) == f"ns.{D}."
    ns = ask(port, D, "NS")
    assert [str(a.rdata) for a in ns.rr] == [f"ns.{D}."]


def test_existing_name_without_the_type_is_nodata_with_soa(port: int) -> None:
    for name, qtype in ((f"web-1.prod.{D}", "AAAA"), (f"prod.{D}", "A"), ("web-1", "TXT")):
        r = ask(port, name, qtype, source=PROD_CLIENT)
        assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1, name
        assert r.rr == [] and [a.rtype for a in r.auth] == [QTYPE.SOA], name


def test_unknown_name_in_the_zone_is_nxdomain_with_soa(port: int) -> None:
    for source in (PROD_CLIENT, HOST_CLIENT):
        r = ask(port, f"nope.prod.{D}", source=source)
        assert r.header.rcode == RCODE.NXDOMAIN and [a.rtype for a in r.auth] == [QTYPE.SOA]


def test_any_gets_one_rrset_and_transfers_are_refused(port: int) -> None:
    r = ask(port, "db", "ANY", source=PROD_CLIENT)
    assert r.header.rcode == RCODE.NOERROR and addresses(r) == ["127.100.255.1"]
    for qtype in ("AXFR", "IXFR"):
        assert ask(port, D, qtype, tcp=True).header.rcode == RCODE.REFUSED
        assert ask(port, D, qtype).header.rcode == RCODE.REFUSED


def test_ttl_is_configurable(zone_file: Path, upstream: FakeUpstream) -> None:
    config = Config(zone_file, (("127.0.0.1", 0),), (upstream.address,), ttl=42)
    with running(config) as (_s, port):
        assert ask(port, f"web-1.prod.{D}").rr[0].ttl == 42
        assert ask(port, f"nope.{D}").auth[0].ttl == 42


# ---------------------------------------------------------------------------------------------
# protocol care


def test_id_and_question_are_echoed_exactly_0x20(port: int) -> None:
    for name in ("wEb-1.PrOd.VpC.iNtErNaL", "WEB-1", "web-1.PROD"):
        for _ in range(3):  # the first answer is built, the next ones come from memory
            for ident in (0, 1, 0xBEEF, 0xFFFF):
                packet = bytes(query(name, ident=ident).pack())
                raw = exchange(port, packet, source=PROD_CLIENT)
                assert raw[:2] == packet[:2]
                assert raw[12 : len(packet)] == packet[12:], name
                r = DNSRecord.parse(raw)
                assert addresses(r) == ["127.100.1.2"]
                assert r.rr[0].rname.label == r.q.qname.label  # the owner keeps the case too


def test_edns_is_answered_with_opt_and_plain_without(port: int) -> None:
    for _ in range(2):
        plain = ask(port, f"web-1.prod.{D}")
        assert [a.rtype for a in plain.ar] == []
        edns = ask(port, f"web-1.prod.{D}", edns=4096)
        assert [a.rtype for a in edns.ar] == [QTYPE.OPT]
        assert edns.ar[0].rclass == 1232  # our UDP payload size
        assert addresses(edns) == ["127.100.1.2"]


def test_edns_version_1_is_badvers(port: int) -> None:
    q = query(f"web-1.prod.{D}", edns=1232)
    q.ar[0].ttl = 1 << 16  # version 1
    r = DNSRecord.parse(exchange(port, bytes(q.pack())))
    assert r.header.rcode == 0 and (r.ar[0].ttl >> 24) == 1  # extended rcode 16 = BADVERS


def big_zone(path: Path) -> ZoneData:
    """A name with 60 A records: 12 + 21 + 60 x 16 bytes, too big for 512, fits 1232."""
    ips = tuple(("big", IPv4Address(f"127.100.3.{i}")) for i in range(1, 61))
    return ZoneData(
        D,
        5,
        IPv4Network("10.90.0.0/24"),
        (),
        (ZoneVpc("prod", IPv4Network("127.100.0.0/16"), ips, ()),),
    )


def test_too_big_for_udp_is_truncated_and_served_in_full_over_tcp(
    zone_file: Path, upstream: FakeUpstream
) -> None:
    config = Config(zone_file, (("127.0.0.1", 0),), (upstream.address,))
    with running(config, load=big_zone) as (_s, port):
        name = f"big.prod.{D}"
        for _ in range(2):
            udp = ask(port, name)
            assert udp.header.tc == 1 and udp.rr == [] and str(udp.q.qname) == name + "."
            small = ask(port, name, edns=512)  # advertises 512: too small as well
            assert small.header.tc == 1 and [a.rtype for a in small.ar] == [QTYPE.OPT]
            assert len(addresses(ask(port, name, edns=1232))) == 60
            tcp = ask(port, name, tcp=True)
            assert tcp.header.tc == 0 and len(addresses(tcp)) == 60


def test_tcp_serves_several_queries_per_connection(port: int) -> None:
    names = [f"web-1.prod.{D}", f"nas.{D}", f"nope.{D}", "example.org"]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        for i, name in enumerate(names):  # pipelined: all sent before any is read
            packet = bytes(query(name, ident=100 + i).pack())
            s.sendall(struct.pack("!H", len(packet)) + packet)
        replies = [
            DNSRecord.parse(recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0])) for _ in names
        ]
    assert [r.header.id for r in replies] == [100, 101, 102, 103]
    assert addresses(replies[0]) == ["127.100.1.2"]
    assert addresses(replies[1]) == ["10.90.0.1"]
    assert replies[2].header.rcode == RCODE.NXDOMAIN
    assert addresses(replies[3]) == [UPSTREAM_ANSWER]


# ---------------------------------------------------------------------------------------------
# forwarding


def test_out_of_zone_names_are_forwarded_for_vpc_and_loopback_clients(
    port: int, upstream: FakeUpstream
) -> None:
    for source in (HOST_CLIENT, PROD_CLIENT, DEV_CLIENT):
        for tcp in (False, True):
            r = ask(port, "www.example.org", source=source, tcp=tcp)
            assert addresses(r) == [UPSTREAM_ANSWER] and r.header.aa == 0
    # the host view has no short forms: those go upstream too
    assert addresses(ask(port, "web-1")) == [UPSTREAM_ANSWER]
    assert upstream.queries == 7


def test_a_silent_upstream_means_servfail_within_2_s(zone_file: Path) -> None:
    with FakeUpstream("127.0.0.54", silent=True) as hole:
        config = Config(zone_file, (("127.0.0.1", 0),), (hole.address,))
        with running(config) as (_s, port):
            for tcp in (False, True):
                start = time.monotonic()
                r = ask(port, "www.example.org", tcp=tcp)
                elapsed = time.monotonic() - start
                assert r.header.rcode == RCODE.SERVFAIL
                # it waited its timeout, and kept the promise of an answer within 2 s
                assert FORWARD_TIMEOUT <= elapsed < 2.0, elapsed
            assert hole.queries >= 2


def test_no_upstream_means_servfail_at_once(zone_file: Path) -> None:
    with running(Config(zone_file, (("127.0.0.1", 0),), ())) as (_s, port):
        start = time.monotonic()
        assert ask(port, "www.example.org").header.rcode == RCODE.SERVFAIL
        # at once: no forward was started, so nothing waited for FORWARD_TIMEOUT
        assert time.monotonic() - start < FORWARD_TIMEOUT


def test_a_pending_forward_does_not_block_other_answers(zone_file: Path) -> None:
    with FakeUpstream("127.0.0.54", silent=True) as hole:
        config = Config(zone_file, (("127.0.0.1", 0),), (hole.address,))
        with running(config) as (_s, port):
            waiting = [
                threading.Thread(target=ask, args=(port, f"slow{i}.example.org")) for i in range(8)
            ]
            for t in waiting:
                t.start()
            wait_until(lambda: hole.queries >= 8, what="8 forwards pending at the upstream")
            assert addresses(ask(port, f"web-1.prod.{D}")) == ["127.100.1.2"]
            # answered while every forward still waits for its (silent) upstream
            assert all(t.is_alive() for t in waiting)
            for t in waiting:
                t.join()


def test_the_second_upstream_is_asked_when_the_first_is_silent(zone_file: Path) -> None:
    with (
        FakeUpstream("127.0.0.54", silent=True) as hole,
        FakeUpstream("127.0.0.55") as good,
    ):
        config = Config(zone_file, (("127.0.0.1", 0),), (hole.address, good.address))
        with running(config) as (_s, port):
            # an answer at all means it came before the forward's deadline (else SERVFAIL)
            assert addresses(ask(port, "www.example.org")) == [UPSTREAM_ANSWER]
            assert hole.queries == 1 and good.queries == 1


def test_upstreams_come_from_resolv_conf_and_follow_its_changes(
    tmp_path: Path, zone_file: Path
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example\nnameserver ::1\nnameserver 127.0.0.56\n")
    config = Config(zone_file, (("127.0.0.1", 0),), None, resolv_conf=resolv, poll_interval=0.05)
    with running(config) as (server, _port):
        assert server.upstreams == (("127.0.0.56", 53),)  # IPv6 nameservers are skipped
        resolv.write_text("nameserver 127.0.0.57\nnameserver 127.0.0.58\n")
        wanted: tuple[tuple[str, int], ...] = (("127.0.0.57", 53), ("127.0.0.58", 53))
        wait_until(lambda: server.upstreams == wanted, timeout=2, what="the new nameservers")


# ---------------------------------------------------------------------------------------------
# the zone file


def test_a_new_zone_file_is_picked_up_within_1_s_without_dropping_queries(
    zone_file: Path, upstream: FakeUpstream
) -> None:
    config = Config(zone_file, (("127.0.0.1", 0),), (upstream.address,))
    with running(config) as (server, port):
        assert ask(port, "web-2", source=PROD_CLIENT).header.rcode == RCODE.NXDOMAIN
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def hammer() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    r = ask(port, "web-1", source=PROD_CLIENT)
                    if addresses(r) != ["127.100.1.2"]:
                        failures.append(str(r))
                    answered += 1
                except OSError as exc:
                    failures.append(repr(exc))

        t = threading.Thread(target=hammer)
        t.start()
        wait_until(lambda: answered >= 10, what="queries flowing before the reload")
        write_zone(zone_file, zone_with(**{"web-2": "127.100.1.3"}))
        # the poller looks every 0.5 s (the default): the new zone is served within 1 s
        wait_until(
            lambda: addresses(ask(port, "web-2", source=PROD_CLIENT)) == ["127.100.1.3"],
            timeout=1.0,
            what="the new zone served",
        )
        at_reload = answered
        wait_until(lambda: answered >= at_reload + 10, what="queries flowing after the reload")
        stop.set()
        t.join()
        assert failures == [] and answered > 20
        assert server.reloads == 1


def test_a_broken_zone_file_keeps_the_zone_loaded(zone_file: Path, upstream: FakeUpstream) -> None:
    config = Config(zone_file, (("127.0.0.1", 0),), (upstream.address,), poll_interval=0.05)
    log: list[str] = []

    def refused(n: int) -> bool:
        return sum("keeping the zone loaded" in line for line in log) >= n

    with running(config, log=log) as (server, port):
        write_zone(zone_file, {"domain": "vpc.internal"})  # missing everything else
        wait_until(lambda: refused(1), what="the incomplete zone file refused")
        assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
        zone_file.write_text("{ not json")
        wait_until(lambda: refused(2), what="the broken zone file refused")
        assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]
        write_zone(zone_file, zone_with(**{"web-3": "127.100.1.4"}))
        wait_until(lambda: server.reloads == 1, what="the good zone file loaded")
        assert addresses(ask(port, "web-3", source=PROD_CLIENT)) == ["127.100.1.4"]
        assert server.reloads == 1


def test_a_whole_host_spec_is_a_zone_file_too(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "spec.json"
    write_zone(path, {"version": 1, "host": "nas", "dns": ZONE})
    with running(Config(path, (("127.0.0.1", 0),), (upstream.address,))) as (_s, port):
        assert addresses(ask(port, "db", source=PROD_CLIENT)) == ["127.100.255.1"]


def test_an_invalid_zone_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "zone.json"
    path.write_text('{"domain": "vpc.internal", "ttl": "five"}')
    server = Server(Config(path, (("127.0.0.1", 0),), ()), log=lambda _m: None)
    with pytest.raises(VpcctlError) as exc:
        server.start()
    assert "zone.json" in exc.value.message and exc.value.hint


def test_without_a_zone_file_loopback_can_still_forward(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = tmp_path / "missing.json"
    config = Config(path, (("127.0.0.1", 0),), (upstream.address,), poll_interval=0.05)
    with running(config) as (server, port):
        assert addresses(ask(port, "www.example.org")) == [UPSTREAM_ANSWER]
        write_zone(path)  # the agent writes it later
        wait_until(lambda: server.tables.zone is not None, what="the zone file loaded")
        assert addresses(ask(port, "web-1", source=PROD_CLIENT)) == ["127.100.1.2"]


def test_listening_on_a_taken_port_is_an_error_with_a_hint(zone_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = Server(Config(zone_file, (("127.0.0.1", port),), ()), log=lambda _m: None)
        with pytest.raises(VpcctlError) as exc:
            server.start()
        assert f"127.0.0.1:{port}" in exc.value.message and exc.value.hint


def test_several_listen_addresses(zone_file: Path, upstream: FakeUpstream) -> None:
    config = Config(zone_file, (("127.0.0.1", 0), ("127.0.0.2", 0)), (upstream.address,))
    with running(config) as (server, _port):
        for host, port in server.addresses:
            raw = exchange(port, bytes(query("web-1").pack()), PROD_CLIENT, server=host)
            assert addresses(DNSRecord.parse(raw)) == ["127.100.1.2"]
