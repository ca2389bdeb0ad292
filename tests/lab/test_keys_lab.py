"""Key lifecycle on the hosts (issue 12 item 4, issue 13 item 4), over real SSH to real sshd and
wireguard-go: preshared keys per pair made on the hosts, `rotate-psk`, `host rotate-key`, with a
ping every 10 ms measuring what each rotation costs."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabHost
from tests.lab.mesh import wait_ping
from tests.lab.sshmesh import SshMesh
from tests.waiting import wait_until

pytestmark = pytest.mark.lab

HOSTS = ("k1", "k2", "k3")


@dataclass
class Keys:
    mesh: SshMesh
    outputs: list[str]  # everything the admin's vpcctl printed in this module
    addresses: dict[str, str] = field(default_factory=dict)

    def vpcctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = self.mesh.vpcctl(*args, check=False)
        self.outputs += [res.stdout, res.stderr]
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    def host(self, name: str) -> LabHost:
        return self.mesh.hosts[name]

    def public_keys(self) -> dict[str, str]:
        hosts = self.mesh.vpcctl_json("host", "ls")
        self.addresses = {h["name"]: str(h["address"]) for h in hosts}
        return {h["name"]: h["public_key"] for h in hosts}

    def ping(self, a: str, b: str) -> bool:
        return wait_ping(self.mesh.lab, self.host(a), self.addresses[b])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    require_lab()
    with Lab(tmp_path_factory.mktemp("keyslab")) as lab:
        m = SshMesh(lab)
        k = Keys(m, [])
        k.vpcctl("mesh", "set", "--psk")
        for name in HOSTS:
            m.add_host(name, nat=(name == "k3"))
        k.vpcctl("up")
        yield k


def psks(k: Keys, name: str) -> dict[str, str]:
    """`wg show vpc0 preshared-keys` on a host: peer public key -> preshared key."""
    out = k.mesh.lab.run(k.host(name), ["wg", "show", "vpc0", "preshared-keys"]).stdout
    return dict(line.split("\t") for line in out.splitlines() if line)


def all_pairs(k: Keys, pub: dict[str, str]) -> dict[frozenset[str], str]:
    """Every pair's key, checked to be the same at both ends and a real key."""
    seen: dict[frozenset[str], str] = {}
    for a in HOSTS:
        for peer, psk in psks(k, a).items():
            b = next(n for n, p in pub.items() if p == peer)
            pair = frozenset((a, b))
            assert psk != "(none)" and base64.b64decode(psk) != bytes(32), (a, b)
            assert seen.setdefault(pair, psk) == psk, f"{a} and {b} disagree on their key"
    assert len(seen) == 3
    return seen


def admin_files(k: Keys) -> bytes:
    blob = b""
    for top in (k.mesh.home, k.mesh.inventory.parent):
        for path in Path(top).rglob("*"):
            if path.is_file():
                blob += path.read_bytes()
    return blob


@dataclass
class PingStats:
    sent: int
    received: int
    lost: int  # replies missing between the first and the last one (the one in flight when
    # ping is stopped is not lost)
    longest_gap: float  # seconds without a reply (missing sequence numbers x interval)


class FastPing:
    """A ping every 10 ms from ``who`` to ``dst`` while the block runs."""

    def __init__(self, lab: Lab, who: LabHost, dst: str) -> None:
        self.lab = lab
        self.log = lab.workdir / f"fastping-{who.name}-{os.getpid()}.log"
        self.out = open(self.log, "w")  # noqa: SIM115
        self.proc = lab.popen(who, ["ping", "-n", "-i", "0.01", "-W", "1", dst],
                              stdout=self.out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(lambda: "icmp_seq=5 " in self.log.read_text(), 10, "the first replies")

    def stop(self) -> PingStats:
        os.killpg(self.proc.pid, signal.SIGINT)  # ping prints its summary on SIGINT
        self.proc.wait(timeout=5)
        self.out.close()
        text = self.log.read_text()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        assert m, text[-300:]
        seqs = sorted(int(s) for s in re.findall(r"icmp_seq=(\d+) ttl", text))
        gaps = [b - a - 1 for a, b in itertools.pairwise(seqs)]
        return PingStats(int(m.group(1)), int(m.group(2)), sum(gaps), max([0, *gaps]) * 0.01)


def test_a_every_pair_has_one_key_at_both_ends_and_none_on_the_admin_side(keys: Keys) -> None:
    pub = keys.public_keys()
    before = all_pairs(keys, pub)
    for a, b in (("k1", "k2"), ("k2", "k3"), ("k3", "k1")):  # every pair, both ways (replies)
        assert keys.ping(a, b), (a, b)
    # the key file on the hosts: 0600, in the state directory
    for name in HOSTS:
        mode = keys.mesh.lab.run(keys.host(name), ["stat", "-c", "%a", "/etc/vpcctl/psk.json"])
        assert mode.stdout.strip() == "600"
    # a re-`up` changes no key
    keys.vpcctl("up")
    assert all_pairs(keys, pub) == before
    blob = admin_files(keys) + "".join(keys.outputs).encode()
    rendered = keys.mesh.vpcctl("render", "k1").stdout
    for psk in before.values():
        for form in (psk.encode(), base64.b64decode(psk).hex().encode(), base64.b64decode(psk)):
            assert form not in blob and form.decode("latin-1") not in rendered
    assert b"psk = true" in keys.mesh.inventory.read_bytes()


def test_b_rotate_psk_keeps_the_tunnels_and_a_new_handshake_uses_the_new_key(
    keys: Keys,
) -> None:
    pub = keys.public_keys()
    before = all_pairs(keys, pub)
    lab = keys.mesh.lab
    ping = FastPing(lab, keys.host("k1"), keys.addresses["k2"])
    keys.vpcctl("rotate-psk")
    stats = ping.stop()
    after = all_pairs(keys, pub)
    assert not set(before.values()) & set(after.values())
    print(f"rotate-psk: {stats}")  # the figure README quotes
    assert stats.lost == 0 and stats.received > 100, stats
    # force a fresh handshake on k1-k2 with the new key: drop the peer on k1, `up` restores it
    lab.run(keys.host("k1"), ["wg", "set", "vpc0", "peer", pub["k2"], "remove"])
    keys.vpcctl("up", "k1")
    assert keys.ping("k1", "k2")
    assert all_pairs(keys, pub) == after


def test_c_rotate_key_records_the_new_key_and_the_peers_follow(keys: Keys) -> None:
    lab = keys.mesh.lab
    old = keys.public_keys()
    ping = FastPing(lab, keys.host("k1"), keys.addresses["k2"])
    res = keys.vpcctl("host", "rotate-key", "k2", "--json")
    stats = ping.stop()
    print(f"rotate-key: {stats}")  # the figure README quotes
    assert all(r["ok"] for r in json.loads(res.stdout)), res.stdout
    new = keys.public_keys()
    assert new["k2"] != old["k2"] and {n: new[n] for n in ("k1", "k3")} == {
        n: old[n] for n in ("k1", "k3")
    }
    k2_key = lab.run(keys.host("k2"), ["wg", "show", "vpc0", "public-key"]).stdout.strip()
    assert k2_key == new["k2"]
    for peer in ("k1", "k3"):
        peers = lab.run(keys.host(peer), ["wg", "show", "vpc0", "peers"]).stdout.split()
        assert new["k2"] in peers and old["k2"] not in peers
        assert keys.ping(peer, "k2")
    all_pairs(keys, new)  # the new pairs have their keys too
    assert stats.received > 100 and stats.longest_gap <= 1.0, stats  # about one handshake at most
