"""Declared + running state: live service backends and the zone with discovered names (pure)."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import homelab
from vpcctl.admin import edits
from vpcctl.admin.render import render, zone_data
from vpcctl.core.endpoints import Endpoint
from vpcctl.core.model import PortSpec, make_selector, selects
from vpcctl.core.running import live_backends, merge_zone
from vpcctl.core.spec import (
    HostSpec,
    ServiceSpec,
    ZoneData,
    from_json,
    to_json,
    zone_from_dict,
    zone_to_dict,
)
from vpcctl.dns import zone
from vpcctl.dns.zone import answer, reverse_name

D = "vpc.internal"
PROD_CLIENT = IPv4Address("10.100.0.2")  # prod/web-1 on nas
STAGING_CLIENT = IPv4Address("10.200.1.2")
LOOPBACK = IPv4Address("127.0.0.1")


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def ep(
    name: str,
    address: str,
    *,
    host: str = "vps1",
    vpc: str = "prod",
    labels: dict[str, str] | None = None,
    ready: bool = True,
) -> Endpoint:
    return Endpoint(
        host=host,
        vpc=vpc,
        name=name,
        address=ip(address),
        labels=tuple(sorted((labels or {}).items())),
        ready=ready,
    )


def spec_with_selectors() -> HostSpec:
    """homelab's nas, with prod/pg selecting app=db and prod/db also selecting app=db,tier=a."""
    inv = homelab()
    inv = edits.add_service(
        inv, "pg", "prod", (PortSpec(5432),), (), selector=make_selector([("app", "db")], "t")
    )
    db = inv.services["prod/db"]
    inv = replace(
        inv,
        services={
            **inv.services,
            "prod/db": replace(db, selector=make_selector([("app", "db"), ("tier", "a")], "t")),
        },
    )
    return render(inv, "nas")


@pytest.fixture(scope="module")
def spec() -> HostSpec:
    return spec_with_selectors()


# ---------------------------------------------------------------------------------------------
# live_backends


def test_without_running_containers_the_backends_are_the_declared_ones(spec: HostSpec) -> None:
    assert live_backends(spec, []) == {
        ("prod", "db"): (ip("10.100.1.2"), ip("10.100.2.2")),
        ("prod", "pg"): (),
        ("staging", "cache"): (ip("10.200.2.2"),),
    }


def test_ready_containers_matching_the_selector_anywhere_are_backends(spec: HostSpec) -> None:
    running = [
        ep("pg-a", "10.100.1.10", host="vps1", labels={"app": "db"}),
        ep("pg-b", "10.100.2.9", host="vps2", labels={"app": "db", "tier": "a", "x": "y"}),
        ep("pg-c", "10.100.0.10", host="nas", labels={"app": "db"}, ready=False),  # starting
        ep("web", "10.100.0.9", host="nas", labels={"app": "web"}),
        ep("other", "10.200.1.9", vpc="staging", labels={"app": "db"}),  # another VPC
        ep("liar", "10.200.2.9", vpc="prod", labels={"app": "db"}),  # outside prod's CIDR
        ep("nolabel", "10.100.1.11"),
    ]
    got = live_backends(spec, running)
    assert got[("prod", "pg")] == (ip("10.100.1.10"), ip("10.100.2.9"))
    # prod/db: declared db-1, db-2 plus the one container with both app=db and tier=a
    assert got[("prod", "db")] == (ip("10.100.1.2"), ip("10.100.2.2"), ip("10.100.2.9"))
    assert got[("staging", "cache")] == (ip("10.200.2.2"),)  # no selector: declared only
    assert list(got) == [("prod", "db"), ("prod", "pg"), ("staging", "cache")]


def test_sorted_by_address_not_by_text_and_deduplicated(spec: HostSpec) -> None:
    running = [
        ep("a", "10.100.1.10", labels={"app": "db"}),
        ep("b", "10.100.1.9", labels={"app": "db"}),
        ep("a", "10.100.1.10", labels={"app": "db"}),
        ep("db-1", "10.100.1.2", labels={"app": "db", "tier": "a"}),  # declared db-1, in Docker
    ]
    got = live_backends(spec, running)
    assert got[("prod", "pg")] == (ip("10.100.1.2"), ip("10.100.1.9"), ip("10.100.1.10"))
    assert got[("prod", "db")] == (ip("10.100.1.2"), ip("10.100.2.2"))


def test_a_declared_backend_reported_not_ready_leaves_and_returns(spec: HostSpec) -> None:
    sick = [ep("db-1", "10.100.1.2", ready=False)]
    assert live_backends(spec, sick)[("prod", "db")] == (ip("10.100.2.2"),)
    well = [ep("db-1", "10.100.1.2", ready=True)]
    assert live_backends(spec, well)[("prod", "db")] == (ip("10.100.1.2"), ip("10.100.2.2"))


def test_unhealthy_leaves_the_set_and_healthy_returns(spec: HostSpec) -> None:
    up = ep("pg-a", "10.100.1.10", labels={"app": "db"})
    assert live_backends(spec, [up])[("prod", "pg")] == (ip("10.100.1.10"),)
    assert live_backends(spec, [replace(up, ready=False)])[("prod", "pg")] == ()
    assert live_backends(spec, [up])[("prod", "pg")] == (ip("10.100.1.10"),)


def test_a_spec_without_services_has_no_backends() -> None:
    spec = replace(spec_with_selectors(), services=())
    assert live_backends(spec, [ep("a", "10.100.1.10", labels={"app": "db"})]) == {}


def test_selects_is_label_containment_and_empty_selects_nothing() -> None:
    assert selects((("app", "db"),), (("app", "db"), ("z", "1")))
    assert not selects((("app", "db"),), (("app", "dbx"),))
    assert not selects((("app", "db"), ("tier", "a")), (("app", "db"),))
    assert not selects((), (("app", "db"),))
    assert selects((("app", ""),), (("app", ""),))
    assert not selects((("app", ""),), ())


def test_the_selector_goes_through_the_host_spec(spec: HostSpec) -> None:
    back = from_json(to_json(spec))
    assert back == spec
    (pg,) = [s for s in back.services if s.name == "pg"]
    assert pg.selector == (("app", "db"),)
    assert '"selector": {\n        "app": "db"\n      }' in to_json(spec)


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        ('"app=db"', "services[1].selector: expected an object"),
        ('{"App": "db"}', "'App' is not a valid label key"),
        ('{"app": 1}', "services[1].selector.app: 1 is not a valid label value"),
        ('{"app": "a\\u0000b"}', "is not a valid label value"),
    ],
)
def test_a_bad_selector_in_a_spec_is_refused(spec: HostSpec, selector: str, says: str) -> None:
    from vpcctl.core.errors import SpecError

    text = to_json(spec).replace(
        '"selector": {\n        "app": "db"\n      }', f'"selector": {selector}'
    )
    assert text != to_json(spec)
    with pytest.raises(SpecError) as info:
        from_json(text)
    assert says in info.value.message and info.value.message.isprintable()


def test_a_spec_from_before_selectors_reads_as_no_selector(spec: HostSpec) -> None:
    import json

    raw = json.loads(to_json(spec))
    for s in raw["services"]:
        del s["selector"]
    back = from_json(json.dumps(raw))
    assert all(s.selector == () for s in back.services)


# ---------------------------------------------------------------------------------------------
# merge_zone


@pytest.fixture(scope="module")
def declared() -> ZoneData:
    return zone_data(homelab())


def names_in(z: ZoneData, vpc: str) -> dict[str, str]:
    (v,) = [v for v in z.vpcs if v.name == vpc]
    return {n: str(a) for n, a in v.containers}


def addresses(ans: zone.Answer) -> list[str]:
    assert ans.rcode == "NOERROR", ans
    return [str(r.data[0]) for r in ans.answers]


def test_no_running_containers_leaves_the_zone_as_declared(declared: ZoneData) -> None:
    assert merge_zone(declared, []) == (declared, ())


def test_discovered_names_resolve_like_declared_ones(declared: ZoneData) -> None:
    merged, messages = merge_zone(
        declared,
        [
            ep("pg-a", "10.100.1.10", host="vps1"),
            ep("worker", "10.200.2.7", host="vps2", vpc="staging"),
        ],
    )
    assert messages == ()
    assert names_in(merged, "prod")["pg-a"] == "10.100.1.10"
    z = zone.build(merged)
    for name in ("pg-a", "pg-a.prod", f"pg-a.prod.{D}"):
        assert addresses(answer(z, name, "A", PROD_CLIENT)) == ["10.100.1.10"]
    assert addresses(answer(z, f"pg-a.prod.{D}", "A", LOOPBACK)) == ["10.100.1.10"]
    assert addresses(answer(z, "worker", "A", STAGING_CLIENT)) == ["10.200.2.7"]
    # VPC views hold: prod's discovered name does not exist in staging, and vice versa
    assert answer(z, "pg-a", "A", STAGING_CLIENT).rcode == "NXDOMAIN"
    assert answer(z, f"pg-a.prod.{D}", "A", STAGING_CLIENT).rcode == "NXDOMAIN"
    assert answer(z, "worker", "A", PROD_CLIENT).rcode == "NXDOMAIN"
    # PTR, in the VPC's view and the host's, not in another VPC's
    rev = reverse_name(ip("10.100.1.10"))
    for client in (PROD_CLIENT, LOOPBACK):
        assert [r.data for r in answer(z, rev, "PTR", client).answers] == [(f"pg-a.prod.{D}",)]
    assert answer(z, rev, "PTR", STAGING_CLIENT).rcode == "NXDOMAIN"
    # declared names still answer
    assert addresses(answer(z, "db-1", "A", PROD_CLIENT)) == ["10.100.1.2"]
    assert addresses(answer(z, "db", "A", PROD_CLIENT)) == ["10.100.255.1"]


def test_the_merged_zone_survives_the_resolver_s_zone_file(declared: ZoneData) -> None:
    merged, _ = merge_zone(declared, [ep("pg-a", "10.100.1.10"), ep("b", "10.100.2.3")])
    assert zone_from_dict(zone_to_dict(merged)) == merged


@pytest.mark.parametrize(
    ("running", "says"),
    [
        (
            ep("db-1", "10.100.1.77"),
            "prod: discovered container 'db-1' (10.100.1.77 on vps1) clashes with the declared "
            "container 'db-1' (10.100.1.2): the declared one wins",
        ),
        (
            ep("db", "10.100.1.77"),
            "prod: discovered container 'db' (10.100.1.77 on vps1) clashes with the declared "
            "service 'db': the service wins",
        ),
        (
            ep("vps2", "10.100.2.7", host="vps2"),
            "prod: discovered container 'vps2' (10.100.2.7 on vps2) has the name of a host: "
            "left out",
        ),
        (
            ep("staging", "10.100.1.77"),
            "prod: discovered container 'staging' (10.100.1.77 on vps1) has the name of a VPC: "
            "left out",
        ),
        (
            ep("impostor", "10.100.1.2"),
            "prod: discovered container 'impostor' (10.100.1.2 on vps1) has the address of the "
            "declared 'db-1': the declared one wins",
        ),
        (
            ep("vip", "10.100.255.1"),
            "prod: discovered container 'vip' (10.100.255.1 on vps1) has the address of the "
            "declared 'db': the declared one wins",
        ),
        (
            ep("Bad_Name", "10.100.1.77"),
            "prod: discovered container 'Bad_Name' (10.100.1.77 on vps1): not a DNS label; ignored",
        ),
        (
            ep("x", "10.100.1.77", vpc="dev"),
            "dev: discovered container 'x' (10.100.1.77 on vps1): no such VPC in the zone; ignored",
        ),
        (
            ep("x", "10.200.1.77", vpc="prod"),
            "prod: discovered container 'x' (10.200.1.77 on vps1): address outside the VPC's "
            "10.100.0.0/16; ignored",
        ),
    ],
)
def test_declared_state_wins_every_clash(declared: ZoneData, running: Endpoint, says: str) -> None:
    merged, messages = merge_zone(declared, [running])
    assert merged == declared
    assert messages == (says,)


def test_a_declared_container_running_in_docker_is_no_clash(declared: ZoneData) -> None:
    assert merge_zone(declared, [ep("db-1", "10.100.1.2")]) == (declared, ())


def test_one_name_on_two_hosts_the_ready_one_then_the_first_host_answers(
    declared: ZoneData,
) -> None:
    a = ep("pg", "10.100.1.10", host="vps1", ready=False)
    b = ep("pg", "10.100.2.10", host="vps2")
    c = ep("pg", "10.100.0.10", host="nas")
    merged, messages = merge_zone(declared, [a, b, c])
    assert names_in(merged, "prod")["pg"] == "10.100.0.10"  # ready, and nas < vps2
    assert messages == (
        "prod: discovered container 'pg' (10.100.2.10 on vps2) has the name of the one at "
        "10.100.0.10 on nas: that one answers",
        "prod: discovered container 'pg' (10.100.1.10 on vps1) has the name of the one at "
        "10.100.0.10 on nas: that one answers",
    )
    merged, _ = merge_zone(declared, [a, b])
    assert names_in(merged, "prod")["pg"] == "10.100.2.10"  # the ready one


def test_one_address_under_two_discovered_names_keeps_the_first(declared: ZoneData) -> None:
    merged, messages = merge_zone(declared, [ep("b", "10.100.1.10"), ep("a", "10.100.1.10")])
    assert names_in(merged, "prod").get("a") == "10.100.1.10" and "b" not in names_in(
        merged, "prod"
    )
    assert messages == (
        "prod: discovered container 'b' (10.100.1.10 on vps1) has the address of the "
        "discovered 'a': left out",
    )


def test_a_declared_name_loses_its_clash_message_never_its_record(declared: ZoneData) -> None:
    merged, messages = merge_zone(declared, [ep("db-1", "10.100.1.77"), ep("db-1", "10.100.2.7")])
    assert names_in(merged, "prod")["db-1"] == "10.100.1.2"
    assert len(messages) == 2 and all("the declared one wins" in m for m in messages)


# ---------------------------------------------------------------------------------------------
# properties

HOSTS = ("nas", "vps1", "vps2")
NAMES = ("db-1", "db", "web-1", "pg", "pg-2", "nas", "prod", "Bad", "a", "b")
LABELS = st.dictionaries(st.sampled_from(("app", "tier", "x")), st.sampled_from(("db", "a", "")))


@st.composite
def endpoints(draw: st.DrawFn) -> Endpoint:
    vpc = draw(st.sampled_from(("prod", "staging", "dev")))
    host = draw(st.sampled_from(HOSTS))
    base = draw(st.sampled_from(("10.100", "10.200")))
    third = draw(st.sampled_from((0, 1, 2, 255)))
    fourth = draw(st.integers(1, 12))
    return Endpoint(
        host=host,
        vpc=vpc,
        name=draw(st.sampled_from(NAMES)),
        address=ip(f"{base}.{third}.{fourth}"),
        labels=tuple(sorted(draw(LABELS).items())),
        ready=draw(st.booleans()),
    )


SPEC = spec_with_selectors()
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(running=st.lists(endpoints(), max_size=25), seed=st.integers(0, 2**32))
@SETTINGS
def test_live_backends_properties(running: list[Endpoint], seed: int) -> None:
    spec = SPEC
    got = live_backends(spec, running)
    shuffled = running + running[: len(running) // 2]
    random.Random(seed).shuffle(shuffled)
    assert live_backends(spec, shuffled) == got  # order and repeats do not matter
    assert sorted(got) == sorted((s.vpc, s.name) for s in spec.services)
    cidr = {v.name: v.cidr for v in spec.dns.vpcs}
    for svc in spec.services:
        live = got[(svc.vpc, svc.name)]
        assert list(live) == sorted(set(live))
        mine = [e for e in running if e.vpc == svc.vpc and e.address in cidr[svc.vpc]]
        ready = {e.address for e in mine if e.ready}
        unready = {e.address for e in mine if not e.ready} - ready
        matching = {e.address for e in mine if e.ready and selects(svc.selector, e.labels)}
        expected = ({b for b in svc.backends if b not in unready}) | matching
        assert set(live) == expected
        assert not svc.selector or all(
            any(e.address == a for e in mine) or a in svc.backends for a in live
        )


def _check_merge(declared: ZoneData, running: list[Endpoint]) -> None:
    merged, messages = merge_zone(declared, running)
    assert merged.hosts == declared.hosts and merged.domain == declared.domain
    assert [v.name for v in merged.vpcs] == [v.name for v in declared.vpcs]
    hosts = {h for h, _ in declared.hosts}
    for before, after in zip(declared.vpcs, merged.vpcs, strict=True):
        assert after.services == before.services and after.cidr == before.cidr
        assert set(before.containers) <= set(after.containers)  # declared records never change
        names = [n for n, _ in after.containers]
        assert len(names) == len(set(names))
        taken = [a for _, a in after.containers] + [vip for _, vip, _ in after.services]
        assert len(taken) == len(set(taken))
        added = set(after.containers) - set(before.containers)
        for name, address in added:
            assert name not in hosts and name not in {v.name for v in declared.vpcs}
            assert address in after.cidr
            assert any(
                e.vpc == after.name and e.name == name and e.address == address for e in running
            )
        # every discovered container is in the zone or named in a message
        for e in running:
            if e.vpc != after.name:
                continue
            assert (e.name, e.address) in after.containers or any(
                f"'{e.name}' ({e.address} on {e.host})" in m for m in messages
            )
    assert zone_from_dict(zone_to_dict(merged)) == merged
    zone.build(merged)  # the resolver can serve it


@given(running=st.lists(endpoints(), max_size=25), seed=st.integers(0, 2**32))
@SETTINGS
def test_merge_zone_properties(running: list[Endpoint], seed: int) -> None:
    declared = SPEC.dns
    _check_merge(declared, running)
    shuffled = running + running[:3]
    random.Random(seed).shuffle(shuffled)
    assert merge_zone(declared, shuffled) == merge_zone(declared, running)


def test_service_spec_default_selector_is_empty() -> None:
    s = ServiceSpec(vpc="prod", name="x", vip=ip("10.100.255.9"), ports=(), backends=())
    assert s.selector == ()
