"""Preshared keys on a host: made here for the pairs this host generates, kept in ``psk.json``
(0600 from birth), sent out only sealed to the other host's public key, and taken in from peers.

`vpcctl up` with ``psk = true`` asks every generating host ``agent psk offer`` (the peers come in
on stdin) and carries each sealed answer to its receiver's ``agent psk accept``; the apply that
follows sets the keys on the WireGuard device (``agent apply`` reads this store). The admin's
process only ever holds sealed bytes it cannot open.
"""

from __future__ import annotations

from typing import Any

from vpcctl.core import pairs
from vpcctl.core.errors import KeyFileError
from vpcctl.core.keys import PresharedKey, PrivateKey, load_private, load_psks, save_psks, seal
from vpcctl.host.state import StateDir


def own_key(state: StateDir, public: str) -> PrivateKey:
    """This host's private key whose public key is ``public``: the current one, or the next one
    during `host rotate-key`."""
    for path in (state.key(), state.next_key()):
        if path.exists():
            key = load_private(path)
            if key.public_key() == public:
                return key
    raise KeyFileError(
        f"this host has no private key for public key {public}",
        "wrong host? otherwise record this host's key with `vpcctl join` again",
    )


def offer(state: StateDir, request: Any, *, rotate: bool = False) -> dict[str, Any]:
    """Make (or, with ``rotate``, remake) the key of each pair with the peers asked for; return
    each one sealed to its peer. Keys already made are sent again unchanged."""
    own, peers = pairs.parse_request(request, "psk offer", "peers")
    own_key(state, own)
    assert isinstance(peers, list)
    with state.locked():
        store = load_psks(state.psk)
        made = 0
        for peer in peers:
            if pairs.generator(own, peer) != own:
                raise KeyFileError(
                    f"psk offer: the pair with {peer} is made by that host, not this one",
                    "this request comes from `vpcctl up`; run it",
                )
            pid = pairs.pair_id(own, peer)
            if rotate or pid not in store:
                store[pid] = PresharedKey.generate()
                made += 1
        if made:
            save_psks(state.psk, store)
    sealed = {peer: seal(store[pairs.pair_id(own, peer)], peer) for peer in peers}
    return {"sealed": sealed, "made": made}


def accept(state: StateDir, request: Any) -> dict[str, Any]:
    """Store the keys peers made for their pairs with this host (sealed to its key)."""
    from vpcctl.core.keys import unseal

    own, sealed = pairs.parse_request(request, "psk accept", "sealed")
    assert isinstance(sealed, dict)
    key = own_key(state, own)
    with state.locked():
        store = load_psks(state.psk)
        changed = 0
        for peer, box in sealed.items():
            if pairs.generator(own, peer) != peer:
                raise KeyFileError(
                    f"psk accept: the pair with {peer} is made by this host, not that one",
                    "this request comes from `vpcctl up`; run it",
                )
            psk = unseal(box, key)
            pid = pairs.pair_id(own, peer)
            if store.get(pid) != psk:
                store[pid] = psk
                changed += 1
        if changed:
            save_psks(state.psk, store)
    return {"stored": len(sealed), "changed": changed}


def for_peers(state: StateDir, own: str, peers: list[str]) -> dict[str, PresharedKey]:
    """The keys this host has for its pairs with ``peers`` (by peer public key)."""
    store = load_psks(state.psk)
    out: dict[str, PresharedKey] = {}
    for peer in peers:
        if peer == own:
            continue
        psk = store.get(pairs.pair_id(own, peer))
        if psk is not None:
            out[peer] = psk
    return out
