"""Issue 4's lab: the admin side over real SSH (paramiko -> sshd in every host namespace),
`vpcctl` run from its own admin namespace."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, ping
from tests.lab.mesh import wait_ping
from tests.lab.sshmesh import SshMesh

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshMesh]:
    """a. init, join x4 over SSH, a VPC, containers, a service, up."""
    require_lab()
    with Lab(tmp_path_factory.mktemp("pushlab")) as lab:
        m = SshMesh(lab)
        for i in range(1, 5):
            m.add_host(f"s{i}", nat=(i == 1))
        m.vpcctl("vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        m.vpcctl("container", "add", "web-1", "--vpc", "prod", "--host", "s1")
        m.vpcctl("container", "add", "db-1", "--vpc", "prod", "--host", "s2")
        m.vpcctl("service", "add", "db", "--vpc", "prod", "--port", "pg=5432", "--backend", "db-1")
        res = m.vpcctl("up", "--json")
        results = json.loads(res.stdout)
        assert [r["ok"] for r in results] == [True] * 4, results
        assert all(r["changed"] for r in results)
        yield m


@pytest.fixture
def net(built: SshMesh) -> SshMesh:
    """The module's mesh, converged again before each test: no test relies on what another one
    left behind (a host key changed, containers added), whatever order they run."""
    res = built.vpcctl("up", "--json", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(r["ok"] for r in json.loads(res.stdout)), res.stdout
    return built


def test_a_join_and_up_give_full_connectivity(net: SshMesh) -> None:
    addrs = {n: net.address(n) for n in net.hosts}
    for a in net.hosts:
        for b in net.hosts:
            if a != b:
                assert wait_ping(net.lab, net.hosts[a], addrs[b]), f"{a} -> {b}"
    inv = net.vpcctl_json("container", "ls")
    web = next(c for c in inv if c["name"] == "web-1")
    db = next(c for c in inv if c["name"] == "db-1")
    c1 = net.lab.add_container(net.hosts["s1"], "web-1", "vb-prod", f"{web['ip']}/24",
                               web["ip"].rsplit(".", 1)[0] + ".1")  # fmt: skip
    net.lab.add_container(net.hosts["s2"], "db-1", "vb-prod", f"{db['ip']}/24",
                          db["ip"].rsplit(".", 1)[0] + ".1")  # fmt: skip
    assert ping(net.lab, c1, db["ip"], count=3) == (3, 3)


def test_join_again_keeps_the_same_key(net: SshMesh) -> None:
    before = {h["name"]: h["public_key"] for h in net.vpcctl_json("host", "ls")}
    res = net.join("s3")
    assert "re-joined s3" in res.stderr
    after = {h["name"]: h["public_key"] for h in net.vpcctl_json("host", "ls")}
    assert after == before


def test_b_plan_exit_code_0_after_up_3_after_container_add(net: SshMesh) -> None:
    res = net.vpcctl("plan", "--exit-code", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("up to date") == 4
    net.vpcctl("container", "add", "db-2", "--vpc", "prod", "--host", "s3")
    res = net.vpcctl("plan", "--exit-code", check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "write resolver zone" in res.stdout
    res = net.vpcctl("up", "--json")
    done = time.monotonic()
    results = json.loads(res.stdout)
    assert all(r["ok"] for r in results)
    # a new container changes names only: every host just rewrites its zone file
    assert all(len(r["changes"]) == 1 and "zone" in r["changes"][0] for r in results), results
    # the new name resolves on every host within 2 s (the resolver reloads the zone by itself)
    ip = next(c["ip"] for c in net.vpcctl_json("container", "ls") if c["name"] == "db-2")
    for name, host in net.hosts.items():
        while True:
            out = net.lab.run(host, ["dig", "+short", "@127.0.0.1", "db-2.prod.vpc.internal"],
                              check=False).stdout.strip()  # fmt: skip
            if out == ip:
                break
            assert time.monotonic() - done < 2.0, (name, out)
            time.sleep(0.05)
    assert net.vpcctl("plan", "--exit-code", check=False).returncode == 0


def test_f_sync_without_tty_and_nothing_to_change_prints_nothing(net: SshMesh) -> None:
    res = net.vpcctl("sync")
    assert res.returncode == 0
    assert res.stdout == "" and res.stderr == ""


def test_c_one_sshd_down_others_converge_exit_4(net: SshMesh) -> None:
    net.lab.stop_sshd(net.hosts["s4"])
    try:
        net.vpcctl("container", "add", "web-2", "--vpc", "prod", "--host", "s2")
        res = net.vpcctl("up", "--connect-timeout", "3", check=False)
        assert res.returncode == 4, res.stdout + res.stderr
        assert "s4" in res.stdout and "FAILED" in res.stdout
        res = net.vpcctl("up", "s1", "s2", "s3", "--json")
        assert all(r["ok"] and not r["changed"] for r in json.loads(res.stdout))
    finally:
        net.sshd["s4"] = net.lab.start_sshd(net.hosts["s4"])
    res = net.vpcctl("up", "--json")
    results = {r["host"]: r for r in json.loads(res.stdout)}
    assert all(r["ok"] for r in results.values())
    assert results["s4"]["changed"] and not results["s1"]["changed"]


def test_d_changed_host_key_is_refused_nothing_pushed(net: SshMesh) -> None:
    net.sshd["s3"] = net.lab.restart_sshd(net.hosts["s3"], new_host_key=True)
    applied = "/etc/vpcctl/spec.json"
    before = net.lab.run(net.hosts["s3"], ["stat", "-c", "%Y", applied]).stdout
    net.vpcctl("container", "add", "web-3", "--vpc", "prod", "--host", "s1")
    res = net.vpcctl("up", "--accept-new", check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "HOST KEY CHANGED" in res.stdout
    assert net.sshd["s3"].host_key_fingerprint in res.stdout
    assert net.lab.run(net.hosts["s3"], ["stat", "-c", "%Y", applied]).stdout == before
    # the admin verifies the new key and replaces the old entry; then it converges
    known = net.home / ".config" / "vpcctl" / "known_hosts"
    lines = [
        ln
        for ln in known.read_text().splitlines()
        if not ln.startswith(net.hosts["s3"].underlay_ip + " ")
    ]
    known.write_text("\n".join(lines) + "\n")
    res = net.vpcctl("up", "--accept-new", "--json")
    assert all(r["ok"] for r in json.loads(res.stdout))


def test_e_two_up_at_once_one_waits_or_refuses(net: SshMesh) -> None:
    net.vpcctl("container", "add", "web-4", "--vpc", "prod", "--host", "s4")
    outs: dict[str, object] = {}

    def run(tag: str, wait: str) -> None:
        outs[tag] = net.vpcctl("up", "--wait", wait, "--json", check=False)

    t1 = threading.Thread(target=run, args=("a", "60"))
    t2 = threading.Thread(target=run, args=("b", "0"))
    t1.start()
    t2.start()
    t1.join()
    t2.join()
    rcs = sorted(o.returncode for o in outs.values())  # type: ignore[attr-defined]
    assert rcs in ([0, 0], [0, 1]), [(o.returncode, o.stderr) for o in outs.values()]  # type: ignore[attr-defined]
    for o in outs.values():
        if o.returncode == 1:  # type: ignore[attr-defined]
            assert "another `vpcctl up`" in o.stderr  # type: ignore[attr-defined]
    assert net.vpcctl("check").returncode == 0
    assert net.vpcctl("plan", "--exit-code", check=False).returncode == 0


def test_status_shows_versions_handshakes_and_a_full_matrix(net: SshMesh) -> None:
    for n in net.hosts:  # make sure every pair has talked recently
        for m in net.hosts:
            if n != m:
                wait_ping(net.lab, net.hosts[n], net.address(m))
    data = net.vpcctl_json("status")
    assert all(h["ok"] and h["reachable"] and h["version"] for h in data["hosts"])
    assert all(all(row.values()) for row in data["matrix"].values()), data["matrix"]
    text = net.vpcctl("status").stdout
    assert "mesh" in text and "+" in text


def test_graph_live_svg_one_node_per_host_one_fresh_edge_per_pair(net: SshMesh) -> None:
    """`vpcctl graph --live --format svg` of the lab, parsed: every host once, every pair once,
    green (fresh handshake) after traffic on every link."""
    import xml.etree.ElementTree as ET
    from itertools import combinations

    addrs = {n: net.address(n) for n in net.hosts}
    for a, b in combinations(sorted(net.hosts), 2):
        assert wait_ping(net.lab, net.hosts[a], addrs[b]), f"{a} -> {b}"
    res = net.vpcctl("graph", "--live", "--format", "svg")
    svg = ET.fromstring(res.stdout)
    ns = "{http://www.w3.org/2000/svg}"
    found: dict[str, list[list[str]]] = {}
    for g in svg.iter(f"{ns}g"):
        classes = (g.get("class") or "").split()
        if len(classes) >= 2:
            found.setdefault(classes[1], []).append(classes)
    hosts = [t.text or "" for g in svg.iter(f"{ns}g") if "host" in (g.get("class") or "").split()
             for t in list(g.iter(f"{ns}text"))[:1]]  # fmt: skip
    assert sorted(hosts) == sorted(net.hosts)
    assert len(found["link"]) == 6 and all(c[2] == "fresh" for c in found["link"]), found["link"]
    assert len(found["service"]) == 1 and len(found["backend"]) == 1


def test_unknown_host_key_refused_without_accept_new(lab: Lab) -> None:
    m = SshMesh(lab)
    m.add_host("u1", join=False)
    res = m.join("u1", accept_new=False, check=False)
    assert res.returncode == 1
    assert "unknown SSH host key" in res.stderr and m.sshd["u1"].host_key_fingerprint in res.stderr
    assert "--accept-new" in res.stderr
    assert m.vpcctl_json("host", "ls") == []


def test_agent_version_mismatch_is_detected_before_any_change(lab: Lab) -> None:
    m = SshMesh(lab)
    m.add_host("v1", join=False)
    host = m.hosts["v1"]
    fake = "/var/lib/vpcctl/old-vpcctl"
    lab.run(host, f"printf '#!/bin/sh\\necho vpcctl 0.0.1\\n' > {fake} && chmod +x {fake}")
    res = m.vpcctl("join", "v1", "--ssh", f"root@{host.underlay_ip}", "--agent", fake,
                   "--accept-new", check=False)  # fmt: skip
    assert res.returncode == 1
    assert "agent is vpcctl 0.0.1" in res.stderr and "vpcctl host bootstrap v1" in res.stderr
    res = m.vpcctl("join", "v1", "--ssh", f"root@{host.underlay_ip}", "--agent", "/nonexistent/vpcctl",
                   "--accept-new", check=False)  # fmt: skip
    assert res.returncode == 1 and "bootstrap" in res.stderr
    assert lab.run(host, "ls /etc/vpcctl").stdout.strip() == ""
