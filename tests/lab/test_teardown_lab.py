"""Issue 12 items 1 and 2 in the lab: leaving (`host rm --purge`) and exact teardown
(`vpcctl down`), driven over real SSH from the admin namespace.

One module-scoped lab: three hosts with sshd and wireguard-go, a VPC with a declared container
and a service, the agent daemon on, a real dockerd on t1 (default docker0 bridge, so Docker's
own iptables rules are there) running a container that is not vpcctl's, started before the
first `up` and connected to the VPC's Docker network after it. Each host's snapshot
(tests/snapshot.py) is taken before the first `up`; after `host rm --purge` (t3) and after
`vpcctl down` (t1, t2) each host is compared with its own, section by section, and the diff is
printed when they differ. The container keeps running: it was never vpcctl's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.lab.conftest import require_lab
from tests.lab.docker import IMAGE, Dockerd, DockerLab, image_tarball, require_docker
from tests.lab.harness import Lab
from tests.lab.sshmesh import SshMesh, agent_command
from tests.snapshot import diff, snapshot

pytestmark = pytest.mark.lab

HOSTS = ("t1", "t2", "t3")


@dataclass
class World:
    net: SshMesh
    docker: Dockerd
    before: dict[str, dict[str, str]]
    keys: dict[str, str]

    def snap(self, name: str) -> dict[str, str]:
        docker = (lambda *a: self.docker.cli(*a).stdout) if name == "t1" else None
        return snapshot(self.net.lab, self.net.hosts[name], docker)

    def assert_as_before(self, name: str, timeout: float = 20.0) -> None:
        """Equal to its snapshot from before the first `up` (processes that were told to stop,
        and sshd's session processes, may take a moment to exit: wait for it, then diff)."""
        deadline = time.monotonic() + timeout
        now = self.snap(name)
        while now != self.before[name] and time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.snap(name)
        assert now == self.before[name], f"{name} differs from before the first up:\n" + diff(
            self.before[name], now
        )

    def peers(self, name: str) -> str:
        return self.net.lab.run(self.net.hosts[name], "wg show all peers", check=False).stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab()
    require_docker()
    image = image_tarball(tmp_path_factory)
    with Lab(tmp_path_factory.mktemp("teardown")) as lab, DockerLab(lab, image) as dl:
        net = SshMesh(lab)
        for name in HOSTS:
            net.add_host(name)
        docker = dl.start(net.hosts["t1"])
        net.vpcctl("host", "set", "t1", "--agent",
                   f"env DOCKER_HOST={docker.url} {agent_command()}")  # fmt: skip
        docker.run("--name", "app", IMAGE, "sleep", "100000")  # not vpcctl's: docker0
        net.vpcctl("vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        net.vpcctl("container", "add", "db-1", "--vpc", "prod", "--host", "t2")
        net.vpcctl("service", "add", "db", "--vpc", "prod", "--port", "pg=5432",
                   "--backend", "db-1", "--selector", "app=db")  # fmt: skip
        net.vpcctl("mesh", "set", "--daemon")
        keys = {h["name"]: h["public_key"] for h in net.vpcctl_json("host", "ls")}
        w = World(net, docker, {}, keys)
        w.before = {name: w.snap(name) for name in HOSTS}
        net.vpcctl("up")
        docker.cli("network", "connect", "vpc-prod", "app")
        yield w


def test_a_up_changed_every_host(world: World) -> None:
    """So that the equalities below can fail: each host differs from its snapshot now."""
    for name in HOSTS:
        now = world.snap(name)
        for section in ("links", "routes", "sysctls", "nftables", "processes"):
            assert now[section] != world.before[name][section], (name, section)
        assert world.keys["t3"] in world.peers(name) or name == "t3"
    assert "vpc-prod" in world.snap("t1")["docker networks"]
    assert "vpcctl:lab" in world.snap("t1")["iptables"]


def test_b_host_rm_purge_leaves_the_host_as_before_and_the_others_without_it(
    world: World,
) -> None:
    net = world.net
    res = net.vpcctl("host", "rm", "t3", "--purge")
    assert "torn down, and out of the inventory" in res.stderr, res.stderr
    assert "t3" not in {h["name"] for h in net.vpcctl_json("host", "ls")}
    world.assert_as_before("t3")
    assert net.lab.run(net.hosts["t3"], "ls -A /etc/vpcctl").stdout.split() == [
        ".agent.lock", "private.key",
    ]  # fmt: skip
    net.vpcctl("up")
    for name in ("t1", "t2"):
        peers = world.peers(name)
        assert world.keys["t3"] not in peers and world.keys["t1" if name == "t2" else "t2"] in peers
    zone = net.lab.run(net.hosts["t1"], "cat /etc/vpcctl/zone.json").stdout
    assert "t3" not in json.dumps(json.loads(zone))


def test_c_down_leaves_every_host_exactly_as_before_and_the_container_running(
    world: World,
) -> None:
    net = world.net
    res = net.vpcctl("down")  # the table (printed: something was removed)
    print(res.stdout)
    table = {ln.split()[0]: ln for ln in res.stdout.splitlines()[1:]}
    assert sorted(table) == ["t1", "t2"] and all(row.split()[1] == "ok" for row in table.values())
    assert "remove Docker network vpc-prod; stop the agent daemon;" in table["t1"], res.stdout
    for name in ("t1", "t2"):
        world.assert_as_before(name)
        assert net.lab.run(net.hosts[name], "ls -A /etc/vpcctl").stdout.split() == [
            ".agent.lock", "private.key",
        ]  # fmt: skip
    (app,) = world.docker.inspect("app", kind="container")
    assert app["State"]["Running"] and set(app["NetworkSettings"]["Networks"]) == {"bridge"}
    again = net.vpcctl_json("down")  # nothing left to remove; the key stays
    assert all(r["ok"] and not r["changes"] and r["key"] == "kept" for r in again), again
    (gone,) = net.vpcctl_json("down", "t2", "--forget-key")
    assert gone["ok"] and gone["key"] == "removed", gone
    # the lab's /etc/vpcctl is a mount point (it stays, empty); a plain directory goes
    assert net.lab.run(net.hosts["t2"], "ls -A /etc/vpcctl 2>/dev/null", check=False).stdout == ""
    world.assert_as_before("t2")
