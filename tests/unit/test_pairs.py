"""Preshared keys per host pair: who makes each key and where it goes (core/pairs.py, pure), the
sealed carriage (core/keys.py), the host's store (host/psk.py) and both WireGuard backends'
wire forms, with hypothesis over key sets and hostile requests."""

from __future__ import annotations

import base64
import json
import stat
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcctl.core import pairs
from vpcctl.core.errors import KeyFileError, VpcctlError
from vpcctl.core.keys import PresharedKey, PrivateKey, load_psks, save_psks, seal, unseal
from vpcctl.host import psk as host_psk
from vpcctl.host.netlink import kernel_peer_requests
from vpcctl.host.state import StateDir
from vpcctl.host.wgtypes import PeerConfig, WgPeer, plan_peer_update
from vpcctl.host.wguapi import format_set_peer, parse_get

raw_keys = st.binary(min_size=32, max_size=32).filter(any)
public_keys = raw_keys.map(lambda b: base64.b64encode(b).decode())
names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
meshes = st.dictionaries(names, public_keys, min_size=0, max_size=9)


@given(public_keys, public_keys)
def test_generator_is_one_of_the_two_and_the_same_from_both_ends(a: str, b: str) -> None:
    if a == b:
        with pytest.raises(ValueError):
            pairs.generator(a, b)
        return
    assert pairs.generator(a, b) == pairs.generator(b, a) in (a, b)
    assert pairs.pair_id(a, b) == pairs.pair_id(b, a)
    assert pairs.pair_id(a, b).split(" ")[0] == pairs.generator(a, b)


@given(meshes)
def test_every_pair_is_offered_exactly_once_by_its_lower_key(hosts: dict[str, str]) -> None:
    offered = pairs.offers(hosts)
    seen = [(hosts[g], peer) for g, peers in offered.items() for peer in peers]
    want = {
        frozenset((hosts[a], hosts[b]))
        for a in hosts
        for b in hosts
        if a < b and hosts[a] != hosts[b]
    }
    assert len(seen) == len({frozenset(p) for p in seen}) == len(want)
    assert {frozenset(p) for p in seen} == want
    for gen_key, peer in seen:
        assert pairs.generator(gen_key, peer) == gen_key


@given(meshes, st.data())
def test_routing_hands_each_sealed_key_to_the_other_end_only(
    hosts: dict[str, str], data: st.DataObject
) -> None:
    offered = pairs.offers(hosts)
    sealed = {g: {p: f"box {g} {p}" for p in peers} for g, peers in offered.items()}
    # a hostile host also answers for pairs it is not in, and for keys nobody has
    stranger = data.draw(public_keys)
    for g in sealed:
        sealed[g][stranger] = "forged"
    routed = pairs.route(hosts, sealed)
    by_key = {k: n for n, k in hosts.items()}
    delivered = 0
    for receiver, boxes in routed.items():
        for gen_key, box in boxes.items():
            assert box == f"box {by_key[gen_key]} {hosts[receiver]}"
            delivered += 1
    assert delivered == sum(len(p) for p in offered.values())


@given(meshes, st.sets(names, max_size=3))
def test_only_keeps_the_pairs_of_those_hosts(hosts: dict[str, str], only: set[str]) -> None:
    by_key = {k: n for n, k in hosts.items()}
    for gen, peers in pairs.offers(hosts, only).items():
        for peer in peers:
            assert gen in only or by_key[peer] in only


def test_a_host_without_a_key_is_in_no_pair() -> None:
    a, b = (base64.b64encode(bytes([i]) * 32).decode() for i in (1, 2))
    assert pairs.offers({"a": a, "b": b, "new": None}) == {"a": (b,)}


HOSTILE: list[object] = [
    None, [], "x", 1, {"own": "x"}, {"own": "x", "peers": [], "more": 1},
    {"own": "A" * 43 + "=", "peers": "notalist"}, {"own": "A" * 43 + "=", "peers": [1]},
    {"own": "AAAA", "peers": []}, {"own": True, "peers": []},
    {"own": "AQ" + "A" * 41 + "=", "peers": ["AQ" + "A" * 41 + "="]},  # itself
]  # fmt: skip


@pytest.mark.parametrize("request_", HOSTILE)
def test_hostile_offer_requests_are_one_error(request_: object) -> None:
    with pytest.raises(VpcctlError):
        pairs.parse_request(request_, "psk offer", "peers")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=50),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=4)))  # fmt: skip
@settings(max_examples=300)
def test_any_json_is_a_request_or_one_error(value: object) -> None:
    for field in ("peers", "sealed"):
        try:
            pairs.parse_request(value, "psk", field)
        except VpcctlError as exc:
            assert exc.message and "\n" not in exc.message


# ------------------------------------------------------------------- sealing and the store


def test_a_sealed_key_opens_only_with_the_receivers_private_key() -> None:
    psk = PresharedKey.generate()
    alice, mallory = PrivateKey.generate(), PrivateKey.generate()
    box = seal(psk, alice.public_key())
    assert psk.to_base64() not in box and psk.raw.hex() not in box
    assert unseal(box, alice) == psk
    for wrong in (mallory, alice):
        with pytest.raises(KeyFileError):
            unseal(box if wrong is mallory else box[:-8] + "AAAAAAA=", wrong)
    assert "redacted" in repr(psk) and psk.to_base64() not in repr(psk) + str(psk)


def test_the_store_is_born_0600_and_refused_when_readable(tmp_path: Path) -> None:
    path = tmp_path / "psk.json"
    store = {"a b": PresharedKey.generate()}
    save_psks(path, store)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_psks(path) == store
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="0600"):
        load_psks(path)
    path.chmod(0o600)
    path.write_text("[1]")
    with pytest.raises(KeyFileError, match="not a preshared-key file"):
        load_psks(path)


def _host(tmp_path: Path, name: str) -> tuple[StateDir, str]:
    state = StateDir(tmp_path / name)
    from vpcctl.host.agent import keygen

    return state, keygen(state)[0]


def test_offer_then_accept_gives_both_ends_the_same_key_and_reoffer_keeps_it(
    tmp_path: Path,
) -> None:
    (sa, a), (sb, b) = _host(tmp_path, "a"), _host(tmp_path, "b")
    (gs, g), (rs, r) = ((sa, a), (sb, b)) if pairs.generator(a, b) == a else ((sb, b), (sa, a))
    first = host_psk.offer(gs, {"own": g, "peers": [r]})
    assert first["made"] == 1
    assert host_psk.accept(rs, {"own": r, "sealed": {g: first["sealed"][r]}}) == {
        "stored": 1,
        "changed": 1,
    }
    assert host_psk.for_peers(gs, g, [r])[r] == host_psk.for_peers(rs, r, [g])[g]
    again = host_psk.offer(gs, {"own": g, "peers": [r]})
    assert again["made"] == 0
    assert host_psk.accept(rs, {"own": r, "sealed": {g: again["sealed"][r]}})["changed"] == 0
    old = host_psk.for_peers(gs, g, [r])
    rotated = host_psk.offer(gs, {"own": g, "peers": [r]}, rotate=True)
    host_psk.accept(rs, {"own": r, "sealed": {g: rotated["sealed"][r]}})
    new = host_psk.for_peers(gs, g, [r])
    assert new[r] == host_psk.for_peers(rs, r, [g])[g] and new[r] != old[r]
    # the wrong end of a pair is refused either way: nobody makes a key for a pair twice
    with pytest.raises(KeyFileError, match="made by that host"):
        host_psk.offer(rs, {"own": r, "peers": [g]})
    with pytest.raises(KeyFileError, match="made by this host"):
        host_psk.accept(gs, {"own": g, "sealed": {r: first["sealed"][r]}})
    with pytest.raises(KeyFileError, match="no private key for public key"):
        host_psk.offer(gs, {"own": r, "peers": []})
    assert old[r].to_base64() not in json.dumps(first)  # the answer holds sealed keys only


# ----------------------------------------------------------------- both WireGuard backends


PEER = base64.b64encode(bytes(range(1, 33))).decode()
NET = (IPv4Network("10.90.0.2/32"),)


def test_the_key_goes_to_both_backends_and_back_as_a_digest_only() -> None:
    psk = PresharedKey.generate()
    cfg = PeerConfig(PEER, None, NET, preshared_key=psk)
    new = plan_peer_update(None, cfg)
    assert new is not None and new.preshared_key == psk
    assert f"preshared_key={psk.raw.hex()}" in format_set_peer(new)
    assert kernel_peer_requests(new)[0]["preshared_key"] == psk.to_base64()
    assert psk.to_base64() not in repr(new) + repr(cfg)
    uapi = f"public_key={base64.b64decode(PEER).hex()}\npreshared_key={psk.raw.hex()}\n" \
           f"allowed_ip=10.90.0.2/32\nerrno=0\n"  # fmt: skip
    seen = parse_get(uapi, "vpc0").peers[PEER]
    assert seen.psk_digest == psk.digest() and psk.raw.hex() not in repr(seen)
    assert plan_peer_update(seen, cfg) is None  # the same key: nothing to do
    other = plan_peer_update(
        seen, PeerConfig(PEER, None, NET, preshared_key=PresharedKey.generate())
    )
    assert other is not None and other.preshared_key is not None and not other.create
    cleared = plan_peer_update(seen, PeerConfig(PEER, None, NET))
    assert cleared is not None and cleared.preshared_key == PresharedKey.none()
    none = WgPeer(PEER, None, NET, 0, None, 0, 0)
    assert plan_peer_update(none, PeerConfig(PEER, None, NET)) is None


def test_keygen_rotate_makes_the_next_key_which_an_apply_expecting_it_takes(tmp_path: Path) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from vpcctl.host.agent import _key_for, keygen

    state = StateDir(tmp_path / "h")
    with pytest.raises(KeyFileError):
        keygen(state, rotate=True)  # nothing to rotate away from yet
    current, _ = keygen(state)
    nxt, created = keygen(state, rotate=True)
    assert created and nxt != current and keygen(state, rotate=True) == (nxt, False)
    assert keygen(state)[0] == current  # still in use
    assert stat.S_IMODE(state.next_key().stat().st_mode) == 0o600
    assert host_psk.own_key(state, nxt).public_key() == nxt  # offers and accepts for the new key
    spec = cast(Any, SimpleNamespace(public_key=nxt, private_key_file="private.key", host="h"))
    assert _key_for(spec, state).public_key() == nxt
    assert keygen(state)[0] == nxt and not state.next_key().exists()


def test_a_rotated_key_is_set_after_the_peers_new_preshared_keys_and_a_reapply_is_empty(
    tmp_path: Path,
) -> None:
    from tests.fakes import FakeSystem
    from tests.unit.test_plan_agent import _inv
    from vpcctl.admin import edits
    from vpcctl.admin.render import render
    from vpcctl.host.agent import apply, keygen
    from vpcctl.host.changes import SetPeer, SetPrivateKey

    state = StateDir(tmp_path / "h1")
    own = keygen(state)[0]
    inv = edits.set_mesh(_inv("wireguard", 3, {"h1": own}), psk=True)

    def give_keys(me: str) -> None:
        store = load_psks(state.psk)
        for name, host in inv.hosts.items():
            if name != "h1" and host.public_key:
                store[pairs.pair_id(me, host.public_key)] = PresharedKey.generate()
        save_psks(state.psk, store)

    give_keys(own)
    system = FakeSystem(backend="kernel")
    first = apply(render(inv, "h1"), system, state)
    assert all("preshared key set" in c.describe() for c in first.plan.changes
               if isinstance(c, SetPeer))  # fmt: skip
    assert apply(render(inv, "h1"), system, state).plan.empty  # the keys are as stored
    new = keygen(state, rotate=True)[0]
    inv = edits.set_host(inv, "h1", public_key=new)
    give_keys(new)
    steps = apply(render(inv, "h1"), system, state).plan.changes
    kinds = [type(c).__name__ for c in steps]
    assert kinds.index("SetPrivateKey") > max(i for i, k in enumerate(kinds) if k == "SetPeer")
    assert sum(isinstance(c, SetPeer) for c in steps) == 2
    assert any(isinstance(c, SetPrivateKey) for c in steps)
    assert apply(render(inv, "h1"), system, state).plan.empty


def test_down_keeps_the_preshared_keys_and_the_next_key_unless_forget_key(tmp_path: Path) -> None:
    from tests.fakes import FakeSystem
    from tests.unit.test_plan_agent import _inv
    from vpcctl.admin import edits
    from vpcctl.admin.render import render
    from vpcctl.host.agent import apply, down, keygen

    state = StateDir(tmp_path / "h1")
    inv = edits.set_mesh(_inv("wireguard", 3, {"h1": keygen(state)[0]}), psk=True)
    save_psks(state.psk, {"a b": PresharedKey.generate()})
    keygen(state, rotate=True)
    system = FakeSystem(backend="kernel")
    apply(render(inv, "h1"), system, state)
    down(system, state)
    assert state.psk.exists() and state.next_key().exists()
    apply(render(inv, "h1"), system, state)
    down(system, state, forget_key=True)
    assert not state.psk.exists() and not state.next_key().exists() and not state.key().exists()
