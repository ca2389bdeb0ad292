"""Issue 13, item 1: `vpcctl doctor` over real SSH. Each check fails once for its real cause
(the resolver killed, UDP blocked by a firewall rule in the switch namespace, forwarding off,
wireguard-go missing) and passes again after the fix it printed."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabHost
from tests.lab.sshmesh import SshMesh
from tests.waiting import wait_until

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshMesh]:
    require_lab()
    with Lab(tmp_path_factory.mktemp("doctorlab")) as lab:
        m = SshMesh(lab)
        m.add_host("d1")
        m.add_host("d2")
        m.vpcctl("vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        m.vpcctl("container", "add", "web-1", "--vpc", "prod", "--host", "d1")
        m.vpcctl(
            "service", "add", "web", "--vpc", "prod", "--port", "http=80", "--backend", "web-1"
        )
        m.vpcctl("mesh", "set", "--daemon", "--metrics", "127.0.0.1:9586")
        m.vpcctl("up")
        yield m


def doctor(net: SshMesh, *hosts: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code, and per host: check name -> check."""
    res = net.vpcctl("doctor", *hosts, "--json", check=False, timeout=120)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, {
        r["host"]: {c["name"]: c for c in r["checks"]} for r in json.loads(res.stdout)
    }


def failing(checks: dict[str, Any]) -> list[str]:
    return sorted(n for n, c in checks.items() if c["status"] == "fail")


def test_all_pass_on_a_healthy_mesh_and_an_unreachable_host_exits_4(net: SshMesh) -> None:
    rc, hosts = doctor(net)
    assert rc == 0, hosts
    for name in ("d1", "d2"):
        checks = hosts[name]
        assert failing(checks) == []
        for n in ("version", "clock", "wireguard", "nftables", "ip_forward", "resolver"):
            assert checks[n]["status"] == "pass", checks[n]
        other = "d2" if name == "d1" else "d1"
        assert checks[f"peer {other}"]["status"] == "pass"
        assert checks[f"mtu {other}"]["detail"].startswith("1420-byte packets pass")
        assert checks["ipip"]["status"] == "skip"  # routing wireguard in this lab
    net.vpcctl("host", "add", "ghost", "--ssh", "root@192.0.2.77")
    try:
        res = net.vpcctl("doctor", "--connect-timeout", "2", check=False, timeout=120)
    finally:
        net.vpcctl("host", "rm", "ghost")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "ghost: UNREACHABLE" in res.stdout
    assert "d1: all checks pass" in res.stdout and "pass  resolver" in res.stdout


def test_host_faults_fail_for_their_cause_and_pass_after_the_printed_fix(net: SshMesh) -> None:
    """d1: resolver killed and wireguard-go gone from PATH; d2: forwarding off."""
    d1, d2 = net.hosts["d1"], net.hosts["d2"]
    net.lab.run(d1, "kill $(cat /etc/vpcctl/resolver.pid)")
    wait_until(lambda: net.lab.run(d1, "kill -0 $(cat /etc/vpcctl/resolver.pid)", check=False)
               .returncode != 0, 10, "resolver gone")  # fmt: skip
    binary = shutil.which("wireguard-go")
    assert binary is not None
    # the host's own mount namespace: its wireguard-go becomes a non-executable file
    net.lab.run(d1, ["mount", "--bind", "/dev/null", binary])
    mounted = True
    net.lab.run(d2, "sysctl -qw net.ipv4.ip_forward=0")
    try:
        rc, hosts = doctor(net)
        assert rc == 1
        assert failing(hosts["d1"]) == ["resolver", "wireguard"], hosts["d1"]
        assert failing(hosts["d2"]) == ["ip_forward"], hosts["d2"]
        wg = hosts["d1"]["wireguard"]
        assert "uses userspace" in wg["detail"]
        assert wg["fix"].endswith("apt-get install --no-install-recommends wireguard-go")
        # the fixes, as printed
        net.lab.run(d1, ["umount", binary])  # stands for `apt-get install wireguard-go`
        mounted = False
        assert hosts["d1"]["resolver"]["fix"] == "vpcctl up d1"
        net.vpcctl(*shlex.split(hosts["d1"]["resolver"]["fix"])[1:])
        assert hosts["d2"]["ip_forward"]["fix"] == "sysctl -w net.ipv4.ip_forward=1"
        net.lab.run(d2, hosts["d2"]["ip_forward"]["fix"])
    finally:
        if mounted:
            net.lab.run(d1, ["umount", binary])
        net.lab.run(d2, "sysctl -qw net.ipv4.ip_forward=1")
    rc, hosts = doctor(net)
    assert rc == 0, (failing(hosts["d1"]), failing(hosts["d2"]))


def test_udp_blocked_in_the_switch_then_let_through(net: SshMesh) -> None:
    sw = net.lab.switch
    net.lab.run(sw, "nft add table bridge doctor && nft add chain bridge doctor block "
                "'{ type filter hook forward priority 0; }' && "
                "nft add rule bridge doctor block udp dport 51820 drop")  # fmt: skip
    try:
        rc, hosts = doctor(net)
        assert rc == 1
        assert failing(hosts["d1"]) == ["peer d2"], hosts["d1"]
        assert failing(hosts["d2"]) == ["peer d1"], hosts["d2"]
        check = hosts["d1"]["peer d2"]
        assert check["detail"].startswith("no answer over the mesh")
        assert "UDP 192.0.2.2:51820" in check["fix"]
        assert hosts["d1"]["mtu d2"]["status"] == "skip"
    finally:
        net.lab.run(sw, "nft delete table bridge doctor")  # the fix: let the UDP through
    rc, hosts = doctor(net)
    assert rc == 0, (failing(hosts["d1"]), failing(hosts["d2"]))


def test_stale_threshold_is_validated(net: SshMesh) -> None:
    res = net.vpcctl("doctor", "d1", "--stale", "0", check=False)
    assert res.returncode == 2 and "error: --stale 0" in res.stderr and "hint:" in res.stderr


def scrape(net: SshMesh, who: LabHost, url: str) -> tuple[int, str]:
    code = ("import sys, urllib.request\n"
            "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())\n"
            "except OSError as e:\n    print(e); sys.exit(3)")  # fmt: skip
    res = net.lab.run(who, [sys.executable, "-c", code, url], check=False)
    return res.returncode, res.stdout


def samples(text: str) -> dict[str, float]:
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines() if ln and not ln.startswith("#")}  # fmt: skip


def test_metrics_scraped_on_loopback_only(net: SshMesh) -> None:
    d1, d2 = net.hosts["d1"], net.hosts["d2"]
    got: dict[str, float] = {}

    def ready() -> bool:
        rc, text = scrape(net, d1, "http://127.0.0.1:9586/metrics")
        got.update(samples(text) if rc == 0 else {})
        return 'vpcctl_service_backends{service="web",vpc="prod"}' in got and any(
            k.startswith("vpcctl_resolver_queries_total{") for k in got
        )

    net.lab.run(d1, ["dig", "+tries=1", "+time=2", "@127.0.0.1", "web-1.prod.vpc.internal"])
    wait_until(ready, 30, "the daemon's metrics")
    queries = {k: v for k, v in got.items() if k.startswith("vpcctl_resolver_queries_total{")}
    assert queries and sum(queries.values()) >= 1, queries
    assert 0 <= got['vpcctl_peer_handshake_age_seconds{peer="d2"}'] < 180
    assert got['vpcctl_peer_receive_bytes_total{peer="d2"}'] > 0
    assert got['vpcctl_peer_transmit_bytes_total{peer="d2"}'] > 0
    assert got['vpcctl_service_backends{service="web",vpc="prod"}'] == 1
    assert got["vpcctl_resolver_up"] == 1
    assert got["vpcctl_applies_total"] >= 1 and got["vpcctl_apply_failures_total"] == 0
    assert got["vpcctl_apply_seconds_total"] > 0
    assert "vpcctl_mesh_peer_reachable" in "".join(got)
    # not served on the underlay: another host cannot scrape it
    rc, text = scrape(net, d2, f"http://{d1.underlay_ip}:9586/metrics")
    assert rc == 3 and "refused" in text
