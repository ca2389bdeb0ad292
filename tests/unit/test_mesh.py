"""The mesh table's pure parts: the wire codec, validation against the sender's slices, expiry,
the service-chain transaction, and the HostSpec fields the daemon reads."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import homelab
from tests.fakes import FakeSystem
from vpcctl.admin.render import render
from vpcctl.core.endpoints import Endpoint, EndpointSet
from vpcctl.core.spec import from_json, to_json
from vpcctl.host import firewall, mesh
from vpcctl.host.agent import apply, down, keygen
from vpcctl.host.changes import MANAGED, StartDaemon, StopDaemon
from vpcctl.host.state import StateDir

NET = IPv4Network
SLICES = {"prod": (NET("10.100.2.0/24"),), "dev": (NET("10.101.2.0/24"),)}
VPCS = frozenset({"prod", "dev"})


def rec(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "vpc": "prod",
        "name": "db-1",
        "address": "10.100.2.7",
        "labels": {"app": "db"},
        "ready": True,
    }
    base.update(kw)
    return base


def test_round_trip_through_the_wire() -> None:
    s = EndpointSet(
        host="vps2",
        boot="b1",
        counter=3,
        endpoints=(
            Endpoint("ignored", "prod", "db-1", IPv4Address("10.100.2.7"), (("app", "db"),), False),
        ),
    )
    msg = mesh.decode(mesh.encode_set(s))
    assert (msg.kind, msg.boot, msg.counter) == ("set", "b1", 3)
    good, bad = mesh.check_set(msg.records, "vps2", SLICES, VPCS)
    # the host is the authenticated sender, never what the message says
    assert good == (replace(s.endpoints[0], host="vps2"),) and not bad
    hb = mesh.decode(mesh.encode_heartbeat("b1", 3))
    assert (hb.kind, hb.counter) == ("hb", 3)


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (rec(address="10.100.3.7"), "slice"),  # another host's slice
        (rec(address="10.100.2.1"), "slice"),  # the gateway
        (rec(address="10.100.2.255"), "slice"),
        (rec(vpc="dev"), "slice"),  # prod address announced in dev
        (rec(vpc="secret"), "vpc"),
        (rec(name="Db_1"), "name"),
        (rec(name="db.1"), "name"),
        (rec(name="x" * 64), "name"),
        (rec(address="::1"), "address"),
        (rec(address=7), "address"),
        (rec(labels={str(i): "v" for i in range(mesh.MAX_LABELS + 1)}), "labels"),
        (rec(labels={"a": 1}), "labels"),
        (rec(labels={"a": "x" * (mesh.MAX_LABEL_VALUE + 1)}), "labels"),
        (rec(ready="yes"), "ready"),
        ("db-1", "shape"),
    ],
)
def test_records_outside_what_the_sender_may_announce_are_rejected(
    record: object, kind: str
) -> None:
    good, bad = mesh.check_set([record, rec(name="ok", address="10.100.2.9")], "vps2", SLICES, VPCS)
    assert [e.name for e in good] == ["ok"]
    assert [b.kind for b in bad] == [kind]


def test_duplicates_keep_the_first() -> None:
    good, bad = mesh.check_set(
        [rec(), rec(address="10.100.2.8"), rec(name="db-2")], "vps2", SLICES, VPCS
    )
    assert [(e.name, str(e.address)) for e in good] == [("db-1", "10.100.2.7")]
    assert [b.kind for b in bad] == ["duplicate", "duplicate"]


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[]\n",
        b'{"v": 2, "type": "set"}\n',
        b'{"v": 1, "type": "gossip", "boot": "b", "counter": 1}\n',
        b'{"v": 1, "type": "set", "boot": "", "counter": 1, "endpoints": []}\n',
        b'{"v": 1, "type": "set", "boot": "b", "counter": -1, "endpoints": []}\n',
        b'{"v": 1, "type": "set", "boot": "b", "counter": true, "endpoints": []}\n',
        b'{"v": 1, "type": "set", "boot": "b", "counter": 1, "endpoints": {}}\n',
        json.dumps(
            {
                "v": 1,
                "type": "set",
                "boot": "b",
                "counter": 1,
                "endpoints": [{}] * (mesh.MAX_RECORDS + 1),
            }
        ).encode(),
        b"\xff\xfe\n",
    ],
)
def test_unusable_messages_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(mesh.ProtocolError):
        mesh.decode(line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_or_fail_cleanly(line: bytes) -> None:
    try:
        msg = mesh.decode(line)
    except mesh.ProtocolError:
        return
    mesh.check_set(msg.records, "vps2", SLICES, VPCS)


_scalar = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=12)
_json = (
    _scalar
    | st.lists(_scalar, max_size=3)
    | st.dictionaries(st.text(max_size=6), _scalar, max_size=3)
)
_record = st.fixed_dictionaries(
    {
        "vpc": st.sampled_from(["prod", "dev", "x", ""]),
        "name": st.sampled_from(["db-1", "web", "Bad_Name", ""]) | st.text(max_size=8),
        "address": st.sampled_from(["10.100.2.7", "10.100.3.7", "10.101.2.9", "10.100.2.1", "x"]),
        "labels": _json,
        "ready": _json,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_json | _record, max_size=6))
def test_check_set_only_ever_returns_records_inside_the_senders_slices(
    records: list[object],
) -> None:
    good, bad = mesh.check_set(records, "vps2", SLICES, VPCS)
    assert len(good) + len(bad) == len(records)
    for e in good:
        assert e.host == "vps2" and e.vpc in VPCS
        assert any(e.address in n for n in SLICES[e.vpc])


def test_table_keeps_newer_versions_and_expires_after_the_grace() -> None:
    spec = render(homelab(), "vps1")
    changes: list[int] = []
    table = mesh.Table(grace=0.2, on_change=lambda: changes.append(1))
    table.set_peers(spec.peers)
    peer = spec.peers[0].name
    e = Endpoint(peer, "prod", "db-1", IPv4Address("10.100.2.7"))
    table.seen(peer)
    assert table.update(peer, "b1", 2, (e,), 0)
    assert not table.update(peer, "b1", 1, (), 0)  # older: ignored
    assert table.update(peer, "b2", 1, (e,), 0)  # a new boot restarts the counter
    assert table.live() == (e,)
    assert table.expire() == []
    table.disconnected(peer, "gone")
    time.sleep(0.25)
    assert table.expire() == [peer] and table.live() == ()
    row = next(r for r in table.to_json() if r["name"] == peer)
    assert not row["reachable"] and row["expired"] and row["errors"] == 1
    table.seen(peer)
    assert table.update(peer, "b2", 1, (e,), 0)  # the same version again after expiry: back
    assert table.live() == (e,)
    assert len(changes) == 3  # first set, expiry, back (a same-content new boot is no change)


def test_publisher_versions_only_real_changes() -> None:
    pub = mesh.Publisher("vps1", "boot")
    e = Endpoint("vps1", "prod", "web-1", IPv4Address("10.100.1.7"))
    assert pub.publish(()) and pub.current.counter == 1
    assert not pub.publish(())
    assert pub.publish((e,)) and pub.current.counter == 2
    assert pub.wait_newer(2, 0.01) is None
    counter, frame = pub.wait_newer(1, 0.01) or (0, b"")
    assert counter == 2 and b"web-1" in frame


def test_backends_live_in_service_chains_replaced_in_one_transaction() -> None:
    spec = render(homelab(), "vps1")
    a, b = IPv4Address("10.100.2.7"), IPv4Address("10.100.1.9")
    live = {("prod", "db"): (a, b)}
    table = firewall.ruleset(spec, live)
    assert (
        "chain svc_prod_db {\n\t\tdnat ip to numgen random mod 2 map { 0 : 10.100.1.9, 1 : "
        "10.100.2.7 }\n\t}" in table
    )
    assert "jump svc_prod_db" in table
    assert "chain svc_staging_cache {\n\t}" in table  # no backend: empty (the VIP is rejected)
    assert f'tcp dport {spec.daemon.port} iifname != "{spec.interface}" drop' in table
    script = firewall.backends_script(spec, live)
    assert script.splitlines() == [
        "flush chain inet vpcctl svc_prod_db",
        "add rule inet vpcctl svc_prod_db dnat ip to numgen random mod 2 map "
        "{ 0 : 10.100.1.9, 1 : 10.100.2.7 }",
        "flush chain inet vpcctl svc_staging_cache",
    ]
    # declared backends when nothing is live
    assert firewall.ruleset(spec) == firewall.ruleset(
        spec, {(s.vpc, s.name): s.backends for s in spec.services}
    )


def test_hostspec_carries_peer_slices_and_the_daemon_settings() -> None:
    inv = homelab()
    inv = replace(inv, mesh=replace(inv.mesh, daemon=True, daemon_port=6000, grace=7))
    spec = render(inv, "vps1")
    peer = next(p for p in spec.peers if p.name == "vps2")
    assert peer.slices == tuple(sorted((v, n) for v, n in inv.hosts["vps2"].slices.items()))
    assert (spec.daemon.enabled, spec.daemon.port, spec.daemon.grace) == (True, 6000, 7)
    back = from_json(to_json(spec))
    assert back == spec
    # an older spec without the fields still reads (daemon off, default port)
    raw = json.loads(to_json(spec))
    raw.pop("daemon")
    for p in raw["peers"]:
        p.pop("slices")
    old = from_json(json.dumps(raw))
    assert not old.daemon.enabled and old.daemon.port == 51821 and old.peers[0].slices == ()


def test_apply_starts_the_daemon_when_asked_and_stops_only_its_own(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    public, _ = keygen(state)
    inv = homelab()
    inv = replace(inv, hosts={**inv.hosts, "vps1": replace(inv.hosts["vps1"], public_key=public)})
    on = replace(inv, mesh=replace(inv.mesh, daemon=True))
    sysm = FakeSystem(backend="kernel")
    first = apply(render(on, "vps1"), sysm, state)
    assert any(isinstance(c, StartDaemon) for c in first.plan.changes)
    assert MANAGED in sysm.procs["daemon.pid"]
    assert apply(render(on, "vps1"), sysm, state).plan.empty
    off = apply(render(inv, "vps1"), sysm, state)  # daemon = false: apply stops its own
    assert [c for c in off.plan.changes if isinstance(c, StopDaemon)] == [StopDaemon()]
    sysm.procs["daemon.pid"] = ("vpcctl", "agent", "run")  # systemd's: left alone
    assert apply(render(inv, "vps1"), sysm, state).plan.empty
    gone = down(sysm, state)  # ... but `agent down` stops it
    assert gone.plan.changes[0] == StopDaemon() and "daemon.pid" not in sysm.procs


def test_agent_table_reads_the_live_table_only_while_a_daemon_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from vpcctl.cli.agent import run
    from vpcctl.host import live

    state = StateDir(tmp_path / "state")
    e = Endpoint("vps2", "prod", "db-1", IPv4Address("10.100.2.7"), (("app", "db"),), True)
    state.write(state.live, live.live_text((e,)))
    assert run(["table", "--json", "--state-dir", str(state.path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"daemon": False, "endpoints": []}  # stale file
    state.write(state.daemon_pid, f"{os.getpid()}\n")  # a live process holds the pid file
    assert live.read_live(state) == (e,)
    assert run(["table", "--json", "--state-dir", str(state.path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["daemon"] is True and out["endpoints"] == [live.endpoint_to_json(e)]
    assert run(["table", "--state-dir", str(state.path)]) == 0
    assert "db-1" in capsys.readouterr().out
