"""Issue 11 (Docker side) in the lab: two hosts in a real wireguard-go mesh, one real dockerd each
(Debian's 20.10, default ``docker0`` bridge on, so Docker's FORWARD DROP policy and isolation
chains are in place), the real agent.

h1's dockerd runs before the first apply; h2's starts after it (the next apply notices the new
socket). Declared containers (``vpc.toml``) run with ``docker run --ip``; Docker numbers the
others from the upper half of each slice.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.lab.docker import IMAGE, Dockerd, DockerLab, docker_mesh
from tests.lab.mesh import ENV, Mesh
from vpcctl.admin import edits
from vpcctl.core.endpoints import Endpoint
from vpcctl.host.docker import DockerDiscovery

pytestmark = pytest.mark.lab


@dataclass
class World:
    mesh: Mesh
    dl: DockerLab
    d: dict[str, Dockerd]
    first: dict[str, dict[str, Any]]

    def gw(self, host: str, vpc: str) -> str:
        return str(self.mesh.inv.hosts[host].slices[vpc].network_address + 1)

    def declared(self, vpc: str, name: str) -> str:
        return str(self.mesh.inv.containers[f"{vpc}/{name}"].ip)

    def run(self, host: str, vpc: str, name: str, *extra: str, dns: bool = True) -> str:
        """``docker run`` a sleeper on VPC ``vpc`` of ``host``; returns its address."""
        args = ["--network", f"vpc-{vpc}", "--name", name]
        if dns:
            args += ["--dns", self.gw(host, vpc)]
        self.d[host].run(*args, *extra, IMAGE, "sleep", "100000")
        return self.d[host].ip_of(name, f"vpc-{vpc}")


def until(fn: Callable[[], bool], timeout: float = 15.0, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


def pings(d: Dockerd, container: str, dst: str, count: int = 1) -> bool:
    res = d.exec(container, "ping", "-c", str(count), "-W", "1", dst, timeout=20)
    return res.returncode == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with docker_mesh(tmp_path_factory, "dockerlab") as (_lab, dl, mesh):
        for name in ("h1", "h2"):
            mesh.add_host(name)
        mesh.add_vpc("prod", "10.100.0.0/16")
        mesh.add_vpc("dev", "10.101.0.0/16")
        mesh.change(lambda inv: edits.add_container(inv, "db-1", "prod", "h2"))
        mesh.change(lambda inv: edits.add_container(inv, "app-2", "dev", "h2"))
        d = {"h1": dl.start(mesh.hosts["h1"])}  # h1: dockerd before the agent
        h2 = Dockerd(dl, mesh.hosts["h2"], ())  # not started yet: only where its socket will be
        for name, dd in (("h1", d["h1"]), ("h2", h2)):
            mesh.env[name] = dd.env
        first = mesh.apply_all()
        d["h2"] = dl.start(mesh.hosts["h2"])  # h2: dockerd after the agent's first apply
        yield World(mesh, dl, d, first)


def test_a_apply_creates_the_networks_with_the_right_options(world: World) -> None:
    assert sorted(world.first["h1"]["docker"]["created"]) == ["vpc-dev", "vpc-prod"]
    assert "docker" not in world.first["h2"]  # no dockerd yet: the agent behaves as before
    inv = world.mesh.inv
    for vpc in ("prod", "dev"):
        s = inv.hosts["h1"].slices[vpc]
        net = world.d["h1"].network(f"vpc-{vpc}")
        assert net is not None
        assert net["Driver"] == "bridge"
        ipam = net["IPAM"]["Config"][0]
        assert ipam["Subnet"] == str(s)
        assert ipam["Gateway"] == str(s.network_address + 1)
        assert ipam["IPRange"] == f"{s.network_address + 128}/25"
        opts = net["Options"]
        assert opts["com.docker.network.bridge.name"] == f"vb-{vpc}"
        assert opts["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert opts["com.docker.network.driver.mtu"] == str(world.mesh.spec("h1").vpcs[0].mtu)
        assert opts["com.docker.network.bridge.gateway_mode_ipv4"] == "routed"
        assert net["Labels"] == {"io.vpcctl.mesh": "lab", "io.vpcctl.vpc": vpc,
                                 "io.vpcctl.host": "h1"}  # fmt: skip
    # Docker adopted vpcctl's bridge: the gateway address is still there, no MASQUERADE for it
    h1 = world.mesh.hosts["h1"]
    addrs = world.mesh.lab.run(h1, "ip -4 -o addr show dev vb-prod").stdout
    assert f"{inv.hosts['h1'].slices['prod'].network_address + 1}/24" in addrs
    nat = world.mesh.lab.run(h1, "iptables -t nat -S POSTROUTING").stdout
    assert "10.100." not in nat and "MASQUERADE" in nat  # docker0's masquerade only
    again = world.mesh.apply("h1")
    assert again["up_to_date"], again


def test_b_dockerd_started_after_the_agent_gets_the_networks_on_the_next_apply(
    world: World,
) -> None:
    d2 = world.d["h2"]
    assert d2.network("vpc-prod") is None
    r = world.mesh.apply("h2")  # same spec: the new Docker socket makes it look closely
    assert sorted(r["docker"]["created"]) == ["vpc-dev", "vpc-prod"], r
    assert d2.network("vpc-prod") is not None
    assert world.mesh.apply("h2")["up_to_date"]
    # the function the long-running agent calls when dockerd (re)appears
    d2.cli("network", "rm", "vpc-dev")
    spec = world.mesh.spec_file("h2")
    code = (
        "import json, sys; from vpcctl.core.spec import from_json; "
        "from vpcctl.host.docker import ensure_networks; "
        f"print(json.dumps(ensure_networks(from_json(open({str(spec)!r}).read())).to_json()))"
    )
    out = world.mesh.lab.run(
        world.mesh.hosts["h2"], [sys.executable, "-c", code], env={**ENV, **world.mesh.env["h2"]}
    )
    assert json.loads(out.stdout)["created"] == ["vpc-dev"]
    assert d2.network("vpc-dev") is not None
    world.mesh.apply("h2")  # the bridge Docker set down on `network rm` comes up again


def test_c_containers_on_two_hosts_ping_and_resolve_names_through_dockers_forward_drop(
    world: World,
) -> None:
    lab, hosts = world.mesh.lab, world.mesh.hosts
    # h1's dockerd enabled forwarding itself, so it set FORWARD's policy to DROP; h2's found
    # forwarding on (the agent's) and left ACCEPT: set DROP there as a boot-time dockerd would
    assert "-P FORWARD DROP" in lab.run(hosts["h1"], "iptables -S FORWARD").stdout
    lab.run(hosts["h2"], "iptables -P FORWARD DROP")
    for h in ("h1", "h2"):
        assert "docker0" in lab.run(hosts[h], "ip -o link show").stdout
    db = world.declared("prod", "db-1")
    assert world.run("h2", "prod", "db-1", "--ip", db) == db
    web = world.run("h1", "prod", "web-1")
    assert web.endswith(".128")  # Docker's half of the slice
    d1, d2 = world.d["h1"], world.d["h2"]
    assert until(lambda: pings(d1, "web-1", db)), "web-1 -> db-1 across hosts"
    assert pings(d2, "db-1", web, count=2), "db-1 -> web-1 across hosts"
    for name in ("db-1", "db-1.prod.vpc.internal"):
        got = d1.exec("web-1", "getent", "hosts", name)
        assert got.returncode == 0 and got.stdout.split()[0] == db, (name, got)
    ns = d1.exec("web-1", "nslookup", "db-1.prod.vpc.internal")
    assert db in ns.stdout, ns
    # Docker's rules alone would drop it: without vpcctl's DOCKER-USER accepts the ping dies,
    # and the next apply (no spec change) notices and puts them back
    rules = lab.run(hosts["h2"], "iptables -S DOCKER-USER").stdout.splitlines()
    ours = [r for r in rules if "vpcctl:lab" in r]
    assert len(ours) == 4, rules  # (vpc0 -> vb-x, vb-x -> vpc0) x 2 VPCs
    for rule in ours:
        lab.run(hosts["h2"], "iptables " + rule.replace("-A ", "-D ", 1))
    assert not pings(d1, "web-1", db, count=2)
    again = world.mesh.apply("h2")
    assert again["docker"]["firewall"].endswith("rules set"), again  # the full path ran
    assert until(lambda: pings(d1, "web-1", db))


def test_d_two_vpcs_stay_isolated_with_dockers_rules_present(world: World) -> None:
    d1, d2 = world.d["h1"], world.d["h2"]
    app2 = world.declared("dev", "app-2")
    world.run("h2", "dev", "app-2", "--ip", app2)
    world.run("h1", "dev", "app-1")
    db, web = world.declared("prod", "db-1"), d1.ip_of("web-1", "vpc-prod")
    assert until(lambda: pings(d1, "app-1", app2)), "dev works across hosts"
    assert not pings(d1, "app-1", db, count=1), "dev -> prod on another host"
    assert not pings(d1, "app-1", web, count=1), "dev -> prod on the same host"
    assert not pings(d2, "db-1", app2, count=1), "prod -> dev on the same host"
    assert not pings(d1, "web-1", app2, count=1), "prod -> dev on another host"
    got = d1.exec("app-1", "getent", "hosts", "db-1.prod.vpc.internal")
    assert got.returncode != 0 or db not in got.stdout, "dev must not see prod's names"


def test_e_status_says_whether_containers_get_the_resolver(world: World) -> None:
    st = world.mesh.status("h1")["docker"]
    assert st["present"] and st["reachable"] and st["version"].startswith("20.")
    assert st["networks"] == ["vpc-dev", "vpc-prod"]
    assert st["dns"]["containers_get_resolver"] == "all"
    world.run("h1", "prod", "nodns-1", dns=False)
    st = world.mesh.status("h1")["docker"]
    assert st["dns"]["containers_get_resolver"] == "some"
    prod = next(r for r in st["dns"]["networks"] if r["network"] == "vpc-prod")
    assert prod["without"] == ["nodns-1"] and prod["with_resolver"] == 1
    text = world.mesh.agent(world.mesh.hosts["h1"], "status").stdout
    assert "docker 20." in text and "some containers lack vpcctl's resolver" in text
    check = json.loads(world.mesh.agent(world.mesh.hosts["h1"], "check", "--json").stdout)
    assert check["docker"]["present"] is True and not check["problems"], check
    world.d["h1"].cli("rm", "-f", "nodns-1")


def test_f_discovery_follows_health_network_changes_and_a_dockerd_restart(world: World) -> None:
    d2 = world.d["h2"]
    sets: list[tuple[float, tuple[Endpoint, ...]]] = []
    lock = threading.Condition()

    def publish(eps: tuple[Endpoint, ...]) -> None:
        with lock:
            sets.append((time.monotonic(), eps))
            lock.notify_all()

    def last() -> dict[str, Endpoint]:
        with lock:
            return {f"{e.vpc}/{e.name}": e for e in sets[-1][1]} if sets else {}

    stop = threading.Event()
    disc = DockerDiscovery("h2", mesh="lab", url=d2.url, relist=30.0, down_grace=1.0,
                           log=lambda m: None)  # fmt: skip
    t = threading.Thread(target=disc.run, args=(publish, stop), daemon=True)
    t.start()
    try:
        assert until(lambda: "prod/db-1" in last() and "dev/app-2" in last(), 10)
        db = last()["prod/db-1"]
        assert db.host == "h2" and str(db.address) == world.declared("prod", "db-1") and db.ready
        n = len(sets)
        world.run("h2", "prod", "hc-1", "--label", "app=hc", "--health-cmd",
                  "test ! -f /tmp/bad", "--health-interval", "2s", "--health-retries", "1")  # fmt: skip
        assert until(lambda: "prod/hc-1" in last(), 5)
        hc = last()["prod/hc-1"]
        assert ("app", "hc") in hc.labels and str(hc.address).endswith(".128")
        assert until(lambda: last()["prod/hc-1"].ready, 10), "healthy -> ready"
        with lock:
            states = [dict((e.name, e.ready) for e in s).get("hc-1") for _, s in sets[n:]]
        assert states[0] is False, states  # "starting" was published first: not ready
        d2.exec("hc-1", "touch", "/tmp/bad", check=True)
        assert until(lambda: not last()["prod/hc-1"].ready, 10), "unhealthy -> not ready"
        d2.exec("hc-1", "rm", "/tmp/bad", check=True)
        assert until(lambda: last()["prod/hc-1"].ready, 10), "healthy again -> ready"
        d2.cli("network", "disconnect", "vpc-prod", "hc-1")
        assert until(lambda: "prod/hc-1" not in last(), 5), "network disconnect"
        d2.cli("network", "connect", "vpc-prod", "hc-1")
        assert until(lambda: "prod/hc-1" in last(), 5), "network connect"
        before = len(sets)
        d2.cli("stop", "-t", "0", "hc-1")
        assert until(lambda: "prod/hc-1" not in last(), 5), "stop"
        with lock:
            assert len(sets) > before
            # publishes only on change: no two consecutive sets are equal
            assert all(a[1] != b[1] for a, b in itertools.pairwise(sets))
        relists = disc.relists
        # dockerd restart: its containers die (no live-restore), the stream breaks, discovery
        # reconnects with backoff and relists; the networks and rules survive
        d2.restart()
        assert until(lambda: "prod/db-1" not in last(), 15), "containers gone with dockerd"
        d2.cli("start", "db-1", "app-2")
        assert until(lambda: "prod/db-1" in last() and "dev/app-2" in last(), 15), "back"
        assert disc.relists > relists
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive(), "discovery did not stop"
    assert d2.network("vpc-prod") is not None
    world.mesh.apply("h2")  # a restarted dockerd: the next apply looks closely
    rules = world.mesh.lab.run(world.mesh.hosts["h2"], "iptables -S DOCKER-USER").stdout
    assert rules.count("vpcctl:lab") == 4, rules
    assert until(lambda: pings(world.d["h1"], "web-1", world.declared("prod", "db-1")))


def test_g_down_removes_only_vpcctl_networks_and_foreign_ones_are_never_clobbered(
    world: World,
) -> None:
    d1, mesh = world.d["h1"], world.mesh
    h1 = mesh.hosts["h1"]
    d1.cli("network", "create", "--subnet", "10.222.0.0/24", "homegrown")
    out = json.loads(mesh.agent(h1, "down", "--json").stdout)
    assert sorted(out["docker"]["removed"]) == ["vpc-dev", "vpc-prod"]
    nets = d1.networks()
    assert "homegrown" in nets and "vpc-prod" not in nets and "vpc-dev" not in nets
    assert "vpcctl" not in mesh.lab.run(h1, "iptables -S DOCKER-USER").stdout
    assert "vb-prod" not in mesh.lab.run(h1, "ip -o link show").stdout
    # a foreign network already named vpc-prod: reported with a hint, left as it was
    d1.cli("network", "create", "--subnet", "10.223.0.0/24", "vpc-prod")
    r = mesh.apply("h1")
    assert r["docker"]["created"] == ["vpc-dev"], r
    assert any("vpcctl did not create" in p and "hint" in p for p in r["docker"]["problems"])
    foreign = d1.network("vpc-prod")
    assert foreign is not None and foreign["IPAM"]["Config"][0]["Subnet"] == "10.223.0.0/24"
    assert not foreign["Labels"]
    out = json.loads(mesh.agent(h1, "down", "--json").stdout)
    assert out["docker"]["removed"] == ["vpc-dev"]
    assert {"homegrown", "vpc-prod"} <= set(d1.networks())


def test_h_without_docker_the_agent_behaves_as_before(world: World) -> None:
    mesh = world.mesh
    mesh.env["h1"] = {"DOCKER_HOST": "unix:///run/no-such-dir/docker.sock"}
    try:
        r = mesh.apply("h1")
        assert r["changed"] and "docker" not in r
        assert mesh.status("h1")["docker"] == {"present": False}
        assert "docker: not running here" in mesh.agent(mesh.hosts["h1"], "status").stdout
        check = json.loads(mesh.agent(mesh.hosts["h1"], "check", "--json").stdout)
        assert check["docker"]["present"] is False
        assert mesh.apply("h1")["up_to_date"]
    finally:
        mesh.env["h1"] = world.d["h1"].env


_DAEMON_SIDE = """
import json, sys, threading
from vpcctl.core.spec import from_json
from vpcctl.host.docker import discovery_for
from vpcctl.host.state import StateDir

spec = from_json(open(sys.argv[1]).read())
found = discovery_for(spec, StateDir.default(None))
assert found is not None
found.run(lambda eps: print(json.dumps(sorted(e.name for e in eps)), flush=True),
          threading.Event())
"""


def test_i_the_long_running_side_recreates_networks_on_a_fresh_dockerd(world: World) -> None:
    """What `vpcctl agent run` does with discovery_for: no apply, a dockerd with a wiped data
    root comes up, and the networks are back."""
    mesh, d2 = world.mesh, world.d["h2"]
    host = mesh.hosts["h2"]
    assert d2.network("vpc-prod") is not None
    out = host.dir / "discovery.out"
    with open(out, "w") as f:
        proc = mesh.lab.popen(
            host, [sys.executable, "-c", _DAEMON_SIDE, str(mesh.spec_file("h2"))],
            env={**ENV, **mesh.env["h2"]}, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert until(lambda: "db-1" in out.read_text(), 20), out.read_text()
        d2.stop()
        d2.purge()  # a fresh dockerd: no networks, no containers
        d2.start()
        assert until(lambda: d2.network("vpc-prod") is not None, 30), out.read_text()
        net = d2.network("vpc-dev")
        assert net is not None and net["Labels"]["io.vpcctl.host"] == "h2"
        sets = [ln for ln in out.read_text().splitlines() if ln.startswith("[")]
        assert sets[-1] == "[]", sets  # nothing runs on the fresh dockerd
    finally:
        mesh.lab.kill(proc)
