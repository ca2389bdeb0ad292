"""The lab harness itself works: underlay, userspace WireGuard, containers, sshd, captures."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.harness import Lab, LabError, LabHost, ping, tcp_check

pytestmark = pytest.mark.lab

WG_PORT = 51820


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _start_wg(lab: Lab, host: LabHost, key: Path, addr: str, peer: LabHost, peer_pub: str,
              peer_addr: str) -> None:  # fmt: skip
    lab.popen(host, ["wireguard-go", "vpc0"], env={"WG_PROCESS_FOREGROUND": "1"})
    deadline = time.monotonic() + 10
    while lab.run(host, ["test", "-S", "/var/run/wireguard/vpc0.sock"], check=False).returncode:
        assert time.monotonic() < deadline, "wireguard-go socket did not appear"
        time.sleep(0.05)
    lab.run(host, ["wg", "set", "vpc0", "private-key", str(key), "listen-port", str(WG_PORT),
                   "peer", peer_pub, "endpoint", f"{peer.underlay_ip}:{WG_PORT}",
                   "allowed-ips", f"{peer_addr}/32"])  # fmt: skip
    lab.run(host, ["ip", "addr", "add", f"{addr}/24", "dev", "vpc0"])
    lab.run(host, ["ip", "link", "set", "vpc0", "up"])


def _wg_keys(lab: Lab, name: str) -> tuple[Path, str]:
    key = lab.workdir / f"{name}.key"
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    key.write_text(priv)
    key.chmod(0o600)
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    return key, pub


def test_underlay_ping_and_private_dirs(lab: Lab) -> None:
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    assert (h1.underlay_ip, h2.underlay_ip) == ("192.0.2.1", "192.0.2.2")
    assert ping(lab, h1, h2.underlay_ip) == (3, 3)
    assert tcp_check(lab, h1, h2, 8080)
    # no route out of the machine: only the connected underlay route
    routes = lab.run(h1, ["ip", "-4", "route"]).stdout
    assert "default" not in routes
    # private mounts: a file written in h1's /etc/vpcctl is invisible in h2 and on the machine
    lab.run(h1, "echo h1 > /etc/vpcctl/who")
    assert lab.run(h1, ["cat", "/etc/vpcctl/who"]).stdout == "h1\n"
    assert lab.run(h2, ["ls", "-A", "/etc/vpcctl"]).stdout == ""
    assert not Path("/etc/vpcctl/who").exists()
    mounts = lab.run(h1, ["findmnt", "-rn", "-o", "TARGET,FSTYPE"]).stdout.splitlines()
    for d in ("/run/wireguard", "/etc/vpcctl", "/var/lib/vpcctl", "/run/vpcctl"):
        assert f"{d} tmpfs" in mounts
    # run(): env, stdin, check
    assert lab.run(h1, "echo $PATH").stdout.strip().startswith("/usr/local/sbin:")
    assert lab.run(h1, ["cat"], input="hi").stdout == "hi"
    with pytest.raises(subprocess.CalledProcessError) as exc:
        lab.run(h1, "echo oops >&2; exit 3")
    assert exc.value.returncode == 3 and "oops" in str(exc.value)
    # underlay must stay on documentation ranges
    with pytest.raises(LabError):
        lab.add_host("h3", "10.0.0.1/24")


def test_wireguard_go_by_hand_and_switch_capture(lab: Lab) -> None:
    h1, h2 = lab.add_host("h1"), lab.add_host("h2")
    k1, p1 = _wg_keys(lab, "h1")
    k2, p2 = _wg_keys(lab, "h2")
    cap = lab.capture(lab.switch, "br0", f"udp port {WG_PORT}")
    _start_wg(lab, h1, k1, "10.90.0.1", h2, p2, "10.90.0.2")
    _start_wg(lab, h2, k2, "10.90.0.2", h1, p1, "10.90.0.1")
    assert ping(lab, h1, "10.90.0.2", count=3) == (3, 3)
    hs = lab.run(h1, ["wg", "show", "vpc0", "latest-handshakes"]).stdout.split()
    assert hs[0] == p2 and int(hs[1]) > 0
    assert tcp_check(lab, h2, h1, 9000, address="10.90.0.1")
    lines = cap.stop()
    wg = [ln for ln in lines if f"{h1.underlay_ip}.{WG_PORT} > {h2.underlay_ip}.{WG_PORT}" in ln]
    back = [ln for ln in lines if f"{h2.underlay_ip}.{WG_PORT} > {h1.underlay_ip}.{WG_PORT}" in ln]
    assert wg and back, lines
    assert all("UDP" in ln for ln in lines)


def test_container_pings_gateway(lab: Lab) -> None:
    h1 = lab.add_host("h1")
    lab.run(h1, "ip link add vpcbr0 type bridge && ip addr add 10.100.1.1/24 dev vpcbr0 "
                "&& ip link set vpcbr0 up")  # fmt: skip
    c1 = lab.add_container(h1, "c1", "vpcbr0", "10.100.1.2/24", "10.100.1.1", mtu=1400,
                           resolv_conf=True)  # fmt: skip
    assert c1.ip == "10.100.1.2" and c1.host is h1
    assert ping(lab, c1, c1.gateway) == (3, 3)
    assert tcp_check(lab, c1, h1, 7000, address="10.100.1.1")
    assert "nameserver 10.100.1.1" in lab.run(c1, ["cat", "/etc/resolv.conf"]).stdout
    assert "10.100.1.1" not in Path("/etc/resolv.conf").read_text()  # the machine's is untouched
    assert "mtu 1400" in lab.run(c1, ["ip", "link", "show", "eth0"]).stdout
    master = lab.run(h1, ["ip", "-o", "link", "show", c1.host_veth]).stdout
    assert "master vpcbr0" in master
    with pytest.raises(LabError):
        lab.add_container(h1, "c2", "nosuchbr", "10.100.1.3/24", "10.100.1.1")


def test_sshd_accepts_client_key(lab: Lab) -> None:
    h1 = lab.add_host("h1")
    admin = lab.add_admin()
    info = lab.start_sshd(h1)
    assert info.host_key_fingerprint.startswith("SHA256:")
    res = lab.run(admin, info.ssh_argv("ip", "-br", "addr"), timeout=20)
    assert "eth0" in res.stdout and f"{h1.underlay_ip}/24" in res.stdout
    # sessions see the host's private mount namespace
    lab.run(h1, "echo marker > /var/lib/vpcctl/m")
    assert lab.run(admin, info.ssh_argv("cat /var/lib/vpcctl/m")).stdout == "marker\n"
    # pinned host key works, then a regenerated host key is rejected
    kh = lab.workdir / "known_hosts"
    kh.write_text(info.known_hosts_line() + "\n")
    assert lab.run(admin, info.ssh_argv("true", known_hosts=kh)).returncode == 0
    new = lab.restart_sshd(h1, new_host_key=True)
    assert new.host_key_fingerprint != info.host_key_fingerprint
    bad = lab.run(admin, new.ssh_argv("true", known_hosts=kh), check=False)
    assert bad.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in bad.stderr


def test_close_leaves_nothing(tmp_path: Path) -> None:
    from tests.lab.conftest import require_lab

    require_lab()
    lab = Lab(tmp_path / "lab")
    try:
        h1 = lab.add_host("h1")
        lab.add_admin()
        lab.run(h1, "ip link add br9 type bridge && ip link set br9 up")
        c = lab.add_container(h1, "c1", "br9", "10.100.9.2/24", "10.100.9.1")
        resolv = c.resolv_conf("10.100.9.1")
        assert resolv.is_relative_to(lab.workdir)  # nothing written outside the lab's temp dir
        lab.start_sshd(h1)
        lab.popen(h1, ["sleep", "300"])
        # a daemon that escapes its process group: only the netns backstop catches it
        lab.run(c, "setsid sleep 301 >/dev/null 2>&1 < /dev/null &")
        lab.capture(lab.switch, "br0", "udp")
        names = set(lab.netns_names)
        assert names <= _netns_list()
        assert lab.stray_pids()
        pids = lab.started_pids
    finally:
        lab.close()
    lab.close()  # idempotent
    assert not names & _netns_list()
    assert lab.stray_pids() == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), pid
    assert not Path("/etc/netns", c.netns).exists()
    with pytest.raises(LabError):
        lab.run(h1, "true")
