"""`container ls` / `service ls` with live state: the hosts' tables, validated and merged (pure),
and the per-host call through the Transport protocol (a fake transport: failure injection)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from tests.builders import homelab
from vpcctl.admin import edits, fanout, views
from vpcctl.admin.transport import Completed
from vpcctl.core.endpoints import Endpoint
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import Inventory, PortSpec, make_selector
from vpcctl.host.live import endpoint_to_json as record  # what a host's daemon sends


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def ep(name: str, address: str, host: str = "vps1", vpc: str = "prod", **kw: Any) -> Endpoint:
    labels = tuple(sorted(kw.pop("labels", {}).items()))
    return Endpoint(host=host, vpc=vpc, name=name, address=ip(address), labels=labels, **kw)


@pytest.fixture
def inv() -> Inventory:
    inv = homelab()
    return edits.add_service(
        inv,
        "pg",
        "prod",
        (PortSpec(5432),),
        ("db-1",),
        selector=make_selector([("app", "db")], "t"),
    )


# ---------------------------------------------------------------------------------------------
# parse_table


def test_parse_table_reads_what_agent_table_prints() -> None:
    a = ep("pg-a", "10.100.1.10", labels={"app": "db", "Maintainer": "me"}, ready=False)
    table = views.parse_table("vps1", {"daemon": True, "endpoints": [record(a)]})
    assert table == views.Table(host="vps1", endpoints=(a,), daemon=True)
    assert views.parse_table("nas", {"daemon": False, "endpoints": []}).daemon is False


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "expected {'endpoints': [...]}"),
        ({"endpoints": {}}, "expected {'endpoints': [...]}"),
        ({"endpoints": [1]}, "endpoints[0]: expected an object"),
        ({"endpoints": [{"host": "Vps1", "vpc": "prod"}]}, "endpoints[0].host"),
        ({"endpoints": [{"host": "vps1", "vpc": "prod", "name": "a\nb"}]}, "endpoints[0].name"),
        (
            {"endpoints": [{"host": "vps1", "vpc": "prod", "name": "a", "address": "x"}]},
            "endpoints[0].address",
        ),
        (
            {"endpoints": [{"host": "vps1", "vpc": "prod", "name": "a", "address": "10.0.0.1",
                            "ready": "yes"}]},
            "endpoints[0].ready",
        ),
        (
            {"endpoints": [{"host": "vps1", "vpc": "prod", "name": "a", "address": "10.0.0.1",
                            "labels": {"k": "\x1b[31m"}}]},
            "endpoints[0].labels",
        ),
    ],
)  # fmt: skip
def test_parse_table_refuses_malformed_records(data: object, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        views.parse_table("vps1", data)
    assert says in info.value.message and info.value.message.isprintable()


# ---------------------------------------------------------------------------------------------
# merging the hosts' tables


def test_a_host_s_own_record_wins_over_a_peer_s_copy(inv: Inventory) -> None:
    fresh = ep("pg-a", "10.100.1.10", host="vps1", ready=False)
    stale = replace(fresh, ready=True)
    other = ep("pg-b", "10.100.2.10", host="vps2")
    tables = [
        views.Table("nas", (stale, other), True),
        views.Table("vps1", (fresh,), True),
    ]
    live, notes = views.running(inv, tables)
    assert live == (fresh, other) and notes == []
    # vps1 could not be asked: the peer's copy is all there is
    live, _ = views.running(
        inv, [views.Table("nas", (stale,), True), views.Table("vps1", error="x")]
    )
    assert live == (stale,)


def test_records_outside_the_announcing_host_s_slice_are_dropped_with_a_note(
    inv: Inventory,
) -> None:
    wrong = ep("x", "10.100.2.10", host="vps1")  # vps2's slice
    unknown = ep("y", "10.100.1.10", host="mini")
    live, notes = views.running(inv, [views.Table("nas", (wrong, unknown), True)])
    assert live == ()
    assert notes == [
        "nas: ignored prod/x at 10.100.2.10 on vps1: not in that host's slice of the VPC "
        "(is the inventory up to date?)",
        "nas: ignored prod/y at 10.100.1.10 on mini: not in that host's slice of the VPC "
        "(is the inventory up to date?)",
    ]


# ---------------------------------------------------------------------------------------------
# container rows


def test_offline_rows_are_the_declared_containers(inv: Inventory) -> None:
    rows = views.container_rows(inv, None)
    assert [(r.vpc, r.name, r.source, r.running, r.ready) for r in rows] == [
        ("prod", "db-1", "declared", None, None),
        ("prod", "db-2", "declared", None, None),
        ("prod", "web-1", "declared", None, None),
        ("staging", "cache-1", "declared", None, None),
        ("staging", "web-1", "declared", None, None),
    ]


def test_live_rows_mark_declared_and_discovered(inv: Inventory) -> None:
    running = (
        ep(
            "db-1", "10.100.1.2", host="vps1", labels={"app": "db"}, ready=False
        ),  # declared, in Docker
        ep("pg-a", "10.100.2.10", host="vps2", labels={"app": "db"}),
        ep("db", "10.100.2.11", host="vps2"),  # clashes with the service prod/db
    )
    rows = views.container_rows(inv, running, known=["vps1", "vps2"])
    got = {(r.vpc, r.name, r.host): r for r in rows}
    assert got[("prod", "db-1", "vps1")].source == "declared"
    assert got[("prod", "db-1", "vps1")].ready is False
    assert got[("prod", "db-1", "vps1")].labels == (("app", "db"),)
    assert got[("prod", "db-2", "vps2")].running is False  # vps2 answered, no such container
    assert got[("prod", "web-1", "nas")].running is None  # nas's set is not known
    pg = got[("prod", "pg-a", "vps2")]
    assert (pg.source, pg.running, pg.ready, pg.note) == ("discovered", True, True, None)
    assert got[("prod", "db", "vps2")].note == (
        "name not in DNS: it clashes with another name or address"
    )
    assert pg.to_json("vpc.internal") == {
        "vpc": "prod", "name": "pg-a", "host": "vps2", "ip": "10.100.2.10",
        "fqdn": "pg-a.prod.vpc.internal", "source": "discovered", "running": True,
        "ready": True, "labels": {"app": "db"}, "note": None,
    }  # fmt: skip
    assert len(rows) == 7
    assert rows == sorted(rows, key=lambda r: (r.vpc, r.name, r.host, int(r.ip), r.source))


# ---------------------------------------------------------------------------------------------
# service backends


def test_service_backends_name_the_containers_behind_each_address(inv: Inventory) -> None:
    running = (
        ep("pg-a", "10.100.2.10", host="vps2", labels={"app": "db"}),
        ep("pg-b", "10.100.0.10", host="nas", labels={"app": "db"}, ready=False),
    )
    got = views.service_backends(inv, running)
    assert [str(b) for b in got[("prod", "pg")]] == ["db-1@10.100.1.2", "pg-a@10.100.2.10"]
    assert got[("prod", "pg")][1].to_json() == {
        "address": "10.100.2.10",
        "name": "pg-a",
        "host": "vps2",
    }
    assert [str(b) for b in got[("prod", "db")]] == ["db-1@10.100.1.2", "db-2@10.100.2.2"]
    assert views.service_backends(replace(inv, hosts={}), running) == {}


# ---------------------------------------------------------------------------------------------
# fanout.table_one through a transport


class Scripted:
    """A Transport that answers each command with a scripted result and records the argv."""

    target = "fake"

    def __init__(self, done: Completed) -> None:
        self.done = done
        self.argv: list[Sequence[str]] = []

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None
    ) -> Completed:
        self.argv.append(list(argv))
        return self.done

    def put(self, path: str, data: bytes, *, timeout: float | None = None) -> None:
        raise AssertionError("no put")

    def close(self) -> None:
        pass


def test_table_one_runs_agent_table_json(inv: Inventory) -> None:
    a = ep("pg-a", "10.100.1.10")
    t = Scripted(Completed(0, json.dumps({"daemon": True, "endpoints": [record(a)]}), ""))
    host = replace(inv.hosts["vps1"], agent="sudo -n vpcctl")
    result = fanout.table_one(host, t)
    assert t.argv == [["sudo", "-n", "vpcctl", "agent", "table", "--json"]]
    assert result.ok and result.data["table"] == views.Table("vps1", (a,), True)


@pytest.mark.parametrize(
    ("done", "says"),
    [
        (
            Completed(2, "", "vpcctl agent: error: argument command: invalid choice: 'table'"),
            "vps1: its agent has no live table",
        ),
        (Completed(127, "", "sh: vpcctl: not found"), "vps1: vpcctl is not installed there"),
        (Completed(0, "hello", ""), "vps1: agent table printed no JSON"),
        (Completed(0, '{"endpoints": [1]}', ""), "vps1: agent table: endpoints[0]"),
        (Completed(1, "", "error: cannot read state\nhint: run as root"), "cannot read state"),
    ],
)
def test_table_one_failures_are_the_host_s_own(inv: Inventory, done: Completed, says: str) -> None:
    result = fanout.for_each([inv.hosts["vps1"]], lambda h: Scripted(done), fanout.table_one)[0]
    assert not result.ok and result.error is not None and says in result.error, result.error
