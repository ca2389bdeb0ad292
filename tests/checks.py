"""Checks shared by several test modules."""

from __future__ import annotations

import re
from ipaddress import IPv4Interface, IPv4Network

from vpcctl.core.model import parse_endpoint

KEY_RE = r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
WG_QUICK_ONLY = {"Address", "MTU", "PostUp", "Table"}


def _check_value(key: str, value: str) -> None:
    if key == "Address":
        IPv4Interface(value)
    elif key in ("ListenPort", "MTU", "PersistentKeepalive"):
        assert re.fullmatch(r"[1-9][0-9]{0,4}", value) and int(value) <= 65535
    elif key == "PostUp":
        assert value == "wg set %i private-key /etc/vpcctl/private.key"
    elif key == "Table":
        assert value == "off"
    elif key in ("PublicKey", "PrivateKey"):
        assert re.fullmatch(KEY_RE, value)
    elif key == "Endpoint":
        assert parse_endpoint(value, "Endpoint") == value
    elif key == "AllowedIPs":
        for net in value.split(", "):
            assert str(IPv4Network(net)) == net
    else:
        raise AssertionError(f"unexpected key {key}")


def check_wg_quick(text: str, peers: int) -> list[tuple[str, str]]:
    """Every line is blank, a comment, a section header, or ``Key = value`` with a known key and a
    value of the right shape; one [Interface] first, then ``peers`` [Peer] sections, each with one
    PublicKey and one AllowedIPs. Returns the (section, key) pairs."""
    assert text.isascii() and "\r" not in text and text.endswith("\n")
    section = None
    seen: list[tuple[str, str]] = []
    per_peer: list[list[str]] = []
    for line in text.splitlines():
        assert line == line.strip(), repr(line)
        if not line or line.startswith("# "):
            assert line.isprintable()
            continue
        if line in ("[Interface]", "[Peer]"):
            assert (section is None) == (line == "[Interface]"), "Interface must come first, once"
            section = line
            if line == "[Peer]":
                per_peer.append([])
            continue
        match = re.fullmatch(r"([A-Za-z]+) = (\S(?:.*\S)?)", line)
        assert match and section, repr(line)
        key, value = match.groups()
        _check_value(key, value)
        seen.append((section, key))
        if section == "[Peer]":
            per_peer[-1].append(key)
    assert len(per_peer) == peers
    for keys in per_peer:
        assert keys.count("PublicKey") == 1 and keys.count("AllowedIPs") == 1
        assert not set(keys) & (WG_QUICK_ONLY | {"ListenPort", "PrivateKey"})
    return seen
