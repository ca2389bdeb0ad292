"""Lab tests of the kernel edge, for real, as root, in throwaway namespaces.

Each sandbox is a network namespace ``vpct-XXXXXX`` plus a long-lived holder
process in a private mount namespace (own tmpfs on /var/run/wireguard, so the
global UAPI socket directory is not shared) and a private pid namespace whose
init reaps and — when killed at teardown — takes every wireguard-go started in
there with it.  Test code runs inside via ``nsenter`` and the driver module.
Only documentation/private ranges are used, on links inside the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey

from tests.lab.conftest import require_lab
from tests.lab.harness import ping_counts
from tests.paths import ROOT

pytestmark = pytest.mark.lab

PY = sys.executable
TOOLS = ("ip", "unshare", "nsenter", "ping", "wireguard-go")

REAPER = r"""
import os, subprocess, sys, time
os.makedirs("/var/run/wireguard", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "vpct", "/var/run/wireguard"],
               check=True)
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


@pytest.fixture(autouse=True, scope="module")
def _lab_gate() -> None:
    require_lab(*TOOLS)


class Sandbox:
    def __init__(self) -> None:
        self.ns = f"vpct-{secrets.token_hex(3)}"
        self.holder: subprocess.Popen[str] | None = None
        self.pid = 0
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=10)
        try:
            self._start_holder()
            self.sh("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def _start_holder(self) -> None:
        self.holder = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "unshare",
                "-m",
                "-p",
                "-f",
                "--propagation",
                "private",
                PY,
                "-c",
                REAPER,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # unshare complains when its child is SIGKILLed
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"namespace holder for {self.ns} did not start ({line!r})")
        children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text()
        self.pid = int(children.split()[0])

    def enter(self, *, mount: bool = True) -> list[str]:
        flags = ["-m", "-n", "-p"] if mount else ["-n"]
        return ["nsenter", "-t", str(self.pid), *flags]

    def sh(self, *args: str) -> str:
        res = subprocess.run(
            [*self.enter(mount=False), *args], capture_output=True, text=True, timeout=60
        )
        if res.returncode != 0:
            raise AssertionError(f"{args} failed in {self.ns}: {res.stderr}")
        return res.stdout

    def call(self, func: str, **args: Any) -> Any:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        res = subprocess.run(
            [*self.enter(), PY, "-m", "tests.lab.kernel_edge_driver", func],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=str(ROOT),
        )
        if res.returncode != 0:
            raise AssertionError(f"{func} failed in {self.ns}:\n{res.stderr}")
        return json.loads(res.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        if self.pid:
            # init of the pid namespace: the kernel kills everything else in it
            # (every wireguard-go started here) when it dies
            with contextlib.suppress(ProcessLookupError):  # already dead
                os.kill(self.pid, signal.SIGKILL)
        if self.holder is not None:
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=10)
            if self.holder.stdout is not None:
                self.holder.stdout.close()
        subprocess.run(["ip", "netns", "del", self.ns], check=False, timeout=10)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def pair() -> Iterator[tuple[Sandbox, Sandbox]]:
    a = Sandbox()
    try:
        b = Sandbox()
    except BaseException:
        a.close()
        raise
    try:
        subprocess.run(
            [
                "ip",
                "-n",
                a.ns,
                "link",
                "add",
                "vpcv0",
                "type",
                "veth",
                "peer",
                "name",
                "vpcv0",
                "netns",
                b.ns,
            ],
            check=True,
            timeout=10,
        )
        a.sh("ip", "addr", "add", "192.0.2.1/24", "dev", "vpcv0")
        b.sh("ip", "addr", "add", "192.0.2.2/24", "dev", "vpcv0")
        a.sh("ip", "link", "set", "vpcv0", "up")
        b.sh("ip", "link", "set", "vpcv0", "up")
        yield a, b
    finally:
        b.close()
        a.close()


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
    return subprocess.Popen(
        [
            *box.enter(mount=False),
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            "1",
            dst,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_userspace_wireguard(pair: tuple[Sandbox, Sandbox], tmp_path: Path) -> None:
    a, b = pair
    log_dir = str(tmp_path / "logs")
    priv_a, pub_a = keypair()
    priv_b, pub_b = keypair()
    peer_b = {
        "public_key": pub_b,
        "endpoint": "192.0.2.2:51820",
        "allowed_ips": ["10.90.0.2/32"],
        "keepalive": 0,
    }
    peer_a = {
        "public_key": pub_a,
        "endpoint": "192.0.2.1:51820",
        "allowed_ips": ["10.90.0.1/32"],
        "keepalive": 0,
    }

    up_a = a.call(
        "wg_up",
        ifname="vpcwg0",
        private_key=priv_a,
        port=51820,
        address="10.90.0.1/24",
        peers=[peer_b],
        log_dir=log_dir,
    )
    up_b = b.call(
        "wg_up",
        ifname="vpcwg0",
        private_key=priv_b,
        port=51820,
        address="10.90.0.2/24",
        peers=[peer_a],
        log_dir=log_dir,
    )
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
    peer_c = {
        "public_key": pub_c,
        "endpoint": "192.0.2.3:51820",
        "allowed_ips": ["10.90.0.3/32", "10.91.0.0/24"],
        "keepalive": 25,
    }
    ping = _ping(a, "10.90.0.2", 40, 0.1)
    time.sleep(1.0)
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
