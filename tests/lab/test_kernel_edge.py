"""Lab tests of the kernel edge, for real, as root, in throwaway namespaces.

Each test gets its own :class:`~tests.lab.harness.Lab`: a host is a network namespace plus a
private mount namespace (own tmpfs on /var/run/wireguard, so the global UAPI socket directory is
not shared); every wireguard-go started in it is killed when the lab closes, also on failure.
Test code runs inside via the driver module. Only documentation/private ranges are used, on
links inside the namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from base64 import b64encode
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from tests.lab.harness import Lab, LabHost, ping_counts
from tests.paths import ROOT

pytestmark = pytest.mark.lab

PY = sys.executable


class Sandbox:
    """One lab host, and the driver module run inside it."""

    def __init__(self, lab: Lab, host: LabHost) -> None:
        self.lab = lab
        self.host = host

    def call(self, func: str, **args: Any) -> Any:
        res = self.lab.run(
            self.host,
            [PY, "-m", "tests.lab.kernel_edge_driver", func],
            input=json.dumps(args),
            timeout=120,
            env={"PYTHONPATH": str(ROOT)},
        )
        return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture
def sandbox(lab: Lab) -> Sandbox:
    return Sandbox(lab, lab.add_host("a"))


@pytest.fixture
def pair(lab: Lab) -> tuple[Sandbox, Sandbox]:
    """Two hosts on the lab's underlay, 192.0.2.1 and 192.0.2.2."""
    a, b = lab.add_host("a", "192.0.2.1/24"), lab.add_host("b", "192.0.2.2/24")
    return Sandbox(lab, a), Sandbox(lab, b)


def keypair() -> tuple[str, str]:
    k = PrivateKey.generate()
    return b64encode(bytes(k)).decode(), b64encode(bytes(k.public_key)).decode()


# ------------------------------------------------------------------------ netlink


def test_netlink_links_addresses_routes(sandbox: Sandbox) -> None:
    r = sandbox.call("netlink_scenario")
    assert r["link"] == {
        "kind": "bridge",
        "mtu": 1400,
        "up": True,
        "alias": "vpcctl:lab",
        "addresses": ["10.99.0.1/24", "10.99.1.1/24"],
        "port_master": "vpcbr0",
        "port_kind": "veth",
    }
    assert r["ours_eq"] is True, r["ours"]
    assert len(r["ours"]) == 1
    foreign = "10.98.0.0/24 10.99.0.5"
    assert any(x.startswith(foreign) for x in r["all_before"])
    assert r["ours_after_del"] == []
    # only our route went away; foreign and kernel routes untouched
    assert sorted(r["all_after"]) == sorted(
        x for x in r["all_before"] if not x.startswith("10.97.0.0/24")
    )
    assert r["direct"] is True
    assert r["changed"] == ["vpcctl:changed", 1380]
    assert r["addresses_after"] == ["10.99.0.1/24"]
    assert r["dup"] is not None
    assert "vpcbr0" in r["dup"][0]
    assert r["dup"][1] == "a link named vpcbr0 exists and is not owned by vpcctl"
    if r["ipip_present"]:
        assert r["ipip"] == ["created", "192.0.2.1", None, "ipip"]
    else:
        status, message, _hint, is_ipip_hint = r["ipip"]
        assert status == "error" and "vpcip0" in message and is_ipip_hint
    if r["wg_kernel"][0] == "error":
        assert "modprobe wireguard" in r["wg_kernel"][2]
    assert r["br_gone"] is True
    assert r["missing"] is not None and "vpcnope0" in r["missing"][0]


# ---------------------------------------------------------------- userspace WG


def _ping(box: Sandbox, dst: str, count: int, interval: float = 0.2) -> subprocess.Popen[str]:
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst]
    return box.lab.popen(box.host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _peer(public_key: str, host: int, *extra: str, keepalive: int = 0) -> dict[str, Any]:
    """A peer on the underlay 192.0.2.HOST whose mesh address is 10.90.0.HOST."""
    return {
        "public_key": public_key,
        "endpoint": f"192.0.2.{host}:51820",
        "allowed_ips": [f"10.90.0.{host}/32", *extra],
        "keepalive": keepalive,
    }


def test_userspace_wireguard(pair: tuple[Sandbox, Sandbox], tmp_path: Path) -> None:
    a, b = pair
    log_dir = str(tmp_path / "logs")
    (priv_a, pub_a), (priv_b, pub_b) = keypair(), keypair()
    peer_a, peer_b = _peer(pub_a, 1), _peer(pub_b, 2)
    up_a, up_b = (
        box.call("wg_up", ifname="vpcwg0", private_key=priv, port=51820,
                 address=f"10.90.0.{n}/24", peers=[peer], log_dir=log_dir)
        for box, n, priv, peer in ((a, 1, priv_a, peer_b), (b, 2, priv_b, peer_a))
    )  # fmt: skip
    for up, pub in ((up_a, pub_a), (up_b, pub_b)):
        assert up["exists"] is True
        assert up["kind"] == "tun" and up["alias"] == "vpcctl:wg" and up["mtu"] == 1420
        assert up["dev"]["public_key"] == pub
        assert up["dev"]["listen_port"] == 51820
        assert up["dev"]["backend"] == "userspace"
    assert up_a["dev"]["peers"][pub_b]["allowed_ips"] == ["10.90.0.2/32"]
    assert up_a["dev"]["peers"][pub_b]["last_handshake"] is None

    out = _ping(a, "10.90.0.2", 3).communicate(timeout=30)[0]
    sent, received = ping_counts(out)
    assert received >= 2, out  # the first echo may wait for the handshake

    dev = a.call("wg_get", ifname="vpcwg0", log_dir=log_dir)
    pb = dev["peers"][pub_b]
    assert pb["last_handshake"] is not None
    assert pb["rx_bytes"] > 0 and pb["tx_bytes"] > 0
    assert pb["endpoint"] == "192.0.2.2:51820"
    hs0 = pb["last_handshake"]

    # a NEW third peer while traffic flows: no loss, existing session untouched
    _, pub_c = keypair()
    peer_c = _peer(pub_c, 3, "10.91.0.0/24", keepalive=25)
    ping = _ping(a, "10.90.0.2", 40, 0.1)
    assert ping.stdout is not None
    first = ping.stdout.readline() + ping.stdout.readline()  # the header, then the first echo
    assert "bytes from 10.90.0.2" in first, first
    dev = a.call("wg_set_peer", ifname="vpcwg0", peer=peer_c, log_dir=log_dir)
    # and an in-place update of the live peer (one more allowed ip)
    peer_b2 = {**peer_b, "allowed_ips": ["10.90.0.2/32", "10.92.0.0/24"]}
    dev = a.call("wg_set_peer", ifname="vpcwg0", peer=peer_b2, log_dir=log_dir)
    out = ping.communicate(timeout=60)[0]
    sent, received = ping_counts(out)
    assert sent == 40 and received == 40, out
    assert set(dev["peers"]) == {pub_b, pub_c}
    assert dev["peers"][pub_c]["allowed_ips"] == ["10.90.0.3/32", "10.91.0.0/24"]
    assert dev["peers"][pub_c]["keepalive"] == 25
    assert dev["peers"][pub_b]["allowed_ips"] == ["10.90.0.2/32", "10.92.0.0/24"]
    assert dev["peers"][pub_b]["last_handshake"] == hs0

    # remove_peer removes only that peer
    dev = a.call("wg_remove_peer", ifname="vpcwg0", public_key=pub_c, log_dir=log_dir)
    assert set(dev["peers"]) == {pub_b}
    assert dev["peers"][pub_b]["allowed_ips"] == ["10.90.0.2/32", "10.92.0.0/24"]
    assert dev["peers"][pub_b]["last_handshake"] == hs0
    dev = a.call("wg_remove_peer", ifname="vpcwg0", public_key=pub_c, log_dir=log_dir)
    assert set(dev["peers"]) == {pub_b}  # removing twice is harmless
    sent, received = ping_counts(_ping(a, "10.90.0.2", 3).communicate(timeout=30)[0])
    assert received == sent

    gone = a.call("wg_delete", ifname="vpcwg0", log_dir=log_dir)
    assert gone == {"exists": False, "link_gone": True, "socket_gone": True}


def test_userspace_many_peers(sandbox: Sandbox, tmp_path: Path) -> None:
    priv, _ = keypair()
    peers: list[dict[str, Any]] = []
    for i in range(150):
        _, pub = keypair()
        peers.append(
            {
                "public_key": pub,
                "endpoint": f"198.51.100.{i % 250 + 1}:{20000 + i}",
                "allowed_ips": [f"10.{100 + i // 256}.{i % 256}.0/24", f"172.20.{i}.1/32"],
                "keepalive": 0,
            }
        )
    dev = sandbox.call(
        "wg_many", ifname="vpcwg1", private_key=priv, port=51821, peers=peers, log_dir=str(tmp_path)
    )
    assert len(dev["peers"]) == 150
    for p in peers:
        got = dev["peers"][p["public_key"]]
        assert got["allowed_ips"] == sorted(p["allowed_ips"], key=IPv4Network)
        assert got["endpoint"] == p["endpoint"]
    gone = sandbox.call("wg_delete", ifname="vpcwg1", log_dir=str(tmp_path))
    assert gone == {"exists": False, "link_gone": True, "socket_gone": True}


def test_userspace_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    r = sandbox.call("wg_errors", log_dir=str(tmp_path))
    assert "vpcnone0" in r["get_missing"][0] and r["get_missing"][1]
    assert r["taken"][1] == "a link named vpctaken0 exists and is not owned by vpcctl"
    assert r["delete_foreign"][1] == "a link named vpctaken0 exists and is not owned by vpcctl"


def test_detect_backend(sandbox: Sandbox) -> None:
    r = sandbox.call("detect")
    assert r["leftovers"] == []  # the link probe never leaves a link behind
    assert r["forced"] == "userspace"
    if not Path("/sys/module/wireguard").exists():
        assert r["name"] == "userspace"
        assert "modprobe wireguard" in r["kernel"]
    else:
        assert r["name"] == "kernel"
