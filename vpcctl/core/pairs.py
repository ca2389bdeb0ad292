"""Preshared keys per host pair: which pairs exist, who makes each key, where each key goes.

Pure: no disk, network, clock or randomness. A pair is two hosts' WireGuard public keys; its key
is made by the host whose public key is the lower one (as raw bytes), so both sides and the admin
agree without asking anybody. The admin only ever handles the key sealed to the other host's
public key (``vpcctl.core.keys.seal``), never the key itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from vpcctl.core.errors import ValidationError
from vpcctl.core.model import parse_public_key

SEALED_MAX = 256  # characters of one sealed key in base64 (it is 108)


def _raw(key: str) -> bytes:
    from base64 import b64decode

    return b64decode(key)


def generator(a: str, b: str) -> str:
    """The public key of the pair's member that makes the pair's key: the lower one."""
    if a == b:
        raise ValueError("a host is no pair with itself")
    return a if _raw(a) < _raw(b) else b


def pair_id(a: str, b: str) -> str:
    """One name for the pair, the same from both ends (the lower key first)."""
    lo = generator(a, b)
    return f"{lo} {b if lo == a else a}"


def keyed(keys: Mapping[str, str | None]) -> dict[str, str]:
    """The hosts that have a public key (a host without one is nobody's peer yet)."""
    return {name: key for name, key in keys.items() if key is not None}


def offers(
    keys: Mapping[str, str | None], only: Collection[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Per generating host, the peers' public keys it makes (or re-sends) a key for, sorted.

    ``only``: just the pairs with at least one of these hosts (`rotate-psk HOST...`)."""
    hosts = keyed(keys)
    out: dict[str, list[str]] = {}
    names = sorted(hosts)
    by_key = {hosts[n]: n for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if only is not None and a not in only and b not in only:
                continue
            if hosts[a] == hosts[b]:
                continue  # two hosts sharing a key is refused by `check`; no pair here
            gen = generator(hosts[a], hosts[b])
            other = hosts[b] if gen == hosts[a] else hosts[a]
            out.setdefault(by_key[gen], []).append(other)
    return {name: tuple(sorted(peers)) for name, peers in sorted(out.items())}


def route(
    keys: Mapping[str, str | None], sealed: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Generator host -> {peer key: sealed} becomes receiver host -> {generator key: sealed}.

    A sealed key for a public key that is no host's (a host answering for a pair it is not in)
    is dropped: only the pairs :func:`offers` asked for are carried."""
    hosts = keyed(keys)
    by_key = {key: name for name, key in hosts.items()}
    asked = offers(keys)
    out: dict[str, dict[str, str]] = {}
    for gen_name, boxes in sealed.items():
        gen_key = hosts.get(gen_name)
        if gen_key is None:
            continue
        wanted = set(asked.get(gen_name, ()))
        for peer_key, box in boxes.items():
            receiver = by_key.get(peer_key)
            if receiver is None or peer_key not in wanted:
                continue
            out.setdefault(receiver, {})[gen_key] = box
    return {name: dict(sorted(b.items())) for name, b in sorted(out.items())}


def parse_request(raw: object, what: str, field: str) -> tuple[str, list[str] | dict[str, str]]:
    """An agent's `psk offer` / `psk accept` request: ``{"own": KEY, FIELD: ...}``, validated.

    ``peers`` is a list of public keys, ``sealed`` a map of public key -> sealed key (base64)."""
    hint = "this request comes from `vpcctl up` / `vpcctl rotate-psk`; run those"
    if not isinstance(raw, dict) or set(raw) != {"own", field}:
        raise ValidationError(f"{what}: expected an object with 'own' and '{field}'", hint)
    own = parse_public_key(raw["own"], f"{what}: own")
    value = raw[field]
    if field == "peers":
        if not isinstance(value, list) or len(value) > 65536:
            raise ValidationError(f"{what}: 'peers' must be a list of public keys", hint)
        peers = [parse_public_key(p, f"{what}: peers") for p in value]
        if own in peers:
            raise ValidationError(f"{what}: a host is no pair with itself", hint)
        return own, sorted(set(peers))
    if not isinstance(value, dict) or len(value) > 65536:
        raise ValidationError(f"{what}: 'sealed' must map public keys to sealed keys", hint)
    out: dict[str, str] = {}
    for k, box in value.items():
        key = parse_public_key(k, f"{what}: sealed")
        if key == own:
            raise ValidationError(f"{what}: a host is no pair with itself", hint)
        if not isinstance(box, str) or not 0 < len(box) <= SEALED_MAX:
            raise ValidationError(f"{what}: a sealed key is base64 text", hint)
        out[key] = box
    return own, out
