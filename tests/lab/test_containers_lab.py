"""Issue 11 end to end in the lab: two hosts in a real wireguard-go mesh, a real dockerd and the
real agent daemon (`vpcctl agent run`, started by `agent apply` with ``daemon = true``) on each,
Docker discovery, the mesh table, the resolver and the service DNAT chains all for real.

Scenarios, in order (module-scoped world):

a. containers on two hosts reach each other by name and through the service VIP of
   ``--selector app=db``;
b. ``docker stop`` of the backend on h1 and ``docker run`` of a replacement on h2: the VIP stays,
   every host's DNAT set follows, and a client loop sees the new backend;
c. the backend's HEALTHCHECK fails (a file is removed): it leaves every set but keeps its name;
   the file returns: so does the backend;
d. h2's dockerd restarts: the backend comes back (restart policy), and the network, the rules
   and traffic from the other host through the VIP recover;
e. the admin's `container ls --live` / `service ls --live` over real SSH show it all, and name
   a host that cannot be asked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from tests.lab.docker import IMAGE, Dockerd, docker_mesh
from tests.lab.mesh import Mesh, wait_ping
from tests.lab.sshmesh import agent_command
from tests.paths import ROOT
from vpcctl.admin import edits
from vpcctl.core.model import parse_portspec

pytestmark = pytest.mark.lab

GRACE = 4
PORT = "5432"
HEALTH = ("--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-timeout",
          "1s", "--health-retries", "1")  # fmt: skip


def until(fn: Callable[[], bool], timeout: float = 15.0, step: float = 0.1) -> float | None:
    """Seconds until ``fn()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if fn():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)


@dataclass
class World:
    mesh: Mesh
    d: dict[str, Dockerd]

    @property
    def vip(self) -> str:
        return str(self.mesh.inv.services["prod/db"].vip)

    def gw(self, host: str) -> str:
        return str(self.mesh.inv.hosts[host].slices["prod"].network_address + 1)

    def client(self, host: str, name: str) -> str:
        self.d[host].run("--network", "vpc-prod", "--dns", self.gw(host), "--name", name,
                         IMAGE, "sleep", "100000")  # fmt: skip
        return self.d[host].ip_of(name, "vpc-prod")

    def backend(self, host: str, name: str, *extra: str) -> str:
        """A server on port 5432 that answers its own name, labelled app=db, healthy while
        /tmp/ok exists."""
        self.d[host].run(
            "--network", "vpc-prod", "--dns", self.gw(host), "--name", name,
            "--label", "app=db", *HEALTH, *extra, IMAGE,
            "sh", "-c", f"touch /tmp/ok; exec nc -ll -p {PORT} -e echo {name}",
        )  # fmt: skip
        return self.d[host].ip_of(name, "vpc-prod")

    def ask(self, host: str, client: str) -> str:
        """What the service answers a client: the name of the backend it reached."""
        res = self.d[host].exec(client, "nc", "-w", "1", self.vip, PORT, timeout=10)
        return res.stdout.strip()

    def getent(self, host: str, client: str, name: str) -> str:
        res = self.d[host].exec(client, "getent", "hosts", name, timeout=10)
        return res.stdout.split()[0] if res.returncode == 0 and res.stdout.split() else ""

    def chain(self, host: str) -> set[str]:
        """The backend addresses in the service's DNAT chain on ``host``."""
        text = self.mesh.lab.run(
            self.mesh.hosts[host], ["nft", "list", "chain", "inet", "vpcctl", "svc_prod_db"],
            check=False,
        ).stdout  # fmt: skip
        return set(re.findall(r"\b(\d+\.\d+\.\d+\.\d+)\b", text)) - {self.vip}

    def everywhere(self, want: set[str]) -> bool:
        return all(self.chain(h) == want for h in self.mesh.hosts)

    def health(self, host: str, name: str) -> str:
        data = self.d[host].inspect(name, kind="container")[0]
        return str((data["State"].get("Health") or {}).get("Status", "none"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with docker_mesh(tmp_path_factory, "containerslab") as (lab, dl, mesh):
        mesh.change(lambda inv: replace(inv, mesh=replace(inv.mesh, daemon=True, grace=GRACE)))
        for name in ("h1", "h2"):
            mesh.add_host(name)
        mesh.add_vpc("prod", "10.120.0.0/16")
        mesh.change(
            lambda inv: edits.add_service(
                inv, "db", "prod", (parse_portspec(f"postgres={PORT}", "t"),), (),
                selector=(("app", "db"),),
            )
        )  # fmt: skip
        d = {}
        for name in ("h1", "h2"):
            d[name] = dl.start(mesh.hosts[name])
            mesh.env[name] = d[name].env
        for name, result in mesh.apply_all().items():
            assert "docker" in result, (name, result)
        w = World(mesh, d)
        h1, h2 = (str(mesh.inv.hosts[n].address) for n in ("h1", "h2"))
        assert wait_ping(lab, mesh.hosts["h1"], h2) and wait_ping(lab, mesh.hosts["h2"], h1)

        def daemons_see_each_other() -> bool:
            for n in ("h1", "h2"):
                st = mesh.status(n).get("daemon") or {}
                if not st.get("running") or not all(p["reachable"] for p in st["peers"]):
                    return False
            return True

        assert until(daemons_see_each_other, 20) is not None, [mesh.status(n) for n in d]
        yield w


def test_a_containers_on_two_hosts_reach_each_other_by_name_and_through_the_vip(
    world: World,
) -> None:
    w = world
    a = w.backend("h1", "db-a")
    cli = w.client("h2", "cli")
    # the backend is discovered on h1, announced to h2, resolves there and enters both chains
    assert until(lambda: w.getent("h2", "cli", "db-a") == a, 15) is not None
    assert w.getent("h2", "cli", "db-a.prod.vpc.internal") == a
    assert w.getent("h2", "cli", "db") == w.vip  # the service name is the VIP
    assert until(lambda: w.everywhere({a}), 10) is not None, {h: w.chain(h) for h in ("h1", "h2")}
    assert w.d["h2"].exec("cli", "ping", "-c", "1", "-W", "2", "db-a").returncode == 0
    assert until(lambda: w.ask("h2", "cli") == "db-a", 10) is not None
    # and the other way round: h1's container finds h2's by name
    assert until(lambda: w.getent("h1", "db-a", "cli") == cli, 15) is not None
    assert w.d["h1"].exec("db-a", "ping", "-c", "1", "-W", "2", "cli").returncode == 0


def test_b_the_vip_follows_the_backend_from_h1_to_h2_and_a_client_loop_moves_on(
    world: World,
) -> None:
    w = world
    a = w.d["h1"].ip_of("db-a", "vpc-prod")
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            seen.append((time.monotonic(), w.ask("h2", "cli")))
            time.sleep(0.1)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        assert until(lambda: any(s == "db-a" for _, s in seen), 10) is not None
        w.d["h1"].cli("stop", "-t", "1", "db-a")
        stopped = time.monotonic()
        gone = until(lambda: all(a not in w.chain(h) for h in ("h1", "h2")), 10)
        assert gone is not None
        b = w.backend("h2", "db-b", "--restart", "always")
        assert until(lambda: w.everywhere({b}), 15) is not None, {h: w.chain(h) for h in w.d}
        assert until(lambda: bool(seen) and seen[-1][1] == "db-b", 10) is not None, seen[-5:]
    finally:
        stop.set()
        t.join(timeout=10)
    after = [s for when, s in seen if when > stopped]
    assert "db-b" in after and "db-a" not in after[after.index("db-b") :], after
    assert w.getent("h2", "cli", "db") == w.vip  # the VIP never changed
    assert w.getent("h2", "cli", "db-b") == b
    assert until(lambda: w.getent("h2", "cli", "db-a") == "", 10) is not None
    print(f"db-a left every DNAT set {gone:.2f} s after `docker stop` returned")


def test_c_an_unhealthy_backend_leaves_every_set_and_returns_when_healthy(world: World) -> None:
    w = world
    b = w.d["h2"].ip_of("db-b", "vpc-prod")
    assert w.health("h2", "db-b") == "healthy"
    w.d["h2"].exec("db-b", "rm", "/tmp/ok", check=True)
    assert until(lambda: w.health("h2", "db-b") == "unhealthy", 10) is not None
    assert until(lambda: w.everywhere(set()), 10) is not None, {h: w.chain(h) for h in w.d}
    assert w.getent("h2", "cli", "db-b") == b  # still running: its name stays
    assert w.ask("h2", "cli") == ""  # no backend: the VIP refuses
    w.d["h2"].exec("db-b", "touch", "/tmp/ok", check=True)
    assert until(lambda: w.everywhere({b}), 10) is not None, {h: w.chain(h) for h in w.d}
    assert until(lambda: w.ask("h2", "cli") == "db-b", 10) is not None


def test_d_dockerd_restarted_traffic_and_rules_recover(world: World) -> None:
    w = world
    w.d["h2"].restart()  # stops its containers; db-b has --restart always
    assert until(lambda: w.health("h2", "db-b") == "healthy", 30) is not None
    b = w.d["h2"].ip_of("db-b", "vpc-prod")
    assert w.d["h2"].network("vpc-prod") is not None
    assert until(lambda: w.everywhere({b}), 20) is not None, {h: w.chain(h) for h in w.d}
    rules = w.mesh.lab.run(w.mesh.hosts["h2"], "iptables -S DOCKER-USER").stdout
    assert "vpcctl" in rules, rules
    # from the other host, through the VIP, routed into h2's Docker network
    w.client("h1", "cli1")
    assert until(lambda: w.ask("h1", "cli1") == "db-b", 15) is not None
    assert until(lambda: w.getent("h1", "cli1", "db-b") == b, 10) is not None


def test_e_container_and_service_ls_live_ask_the_hosts_over_ssh(world: World) -> None:
    """The admin's view of running state: `vpcctl container ls --live` / `service ls --live`
    from an admin namespace over real SSH (sshd in each host) to the agents' live tables."""
    w, lab = world, world.mesh.lab
    admin = lab.add_admin()
    home = lab.workdir / "admin-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy(lab.client_key(), home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    known = home / "known_hosts"
    known.write_text(
        "".join(lab.start_sshd(w.mesh.hosts[n]).known_hosts_line() + "\n" for n in w.d)
    )
    w.mesh.change(
        lambda inv: replace(
            inv, hosts={n: replace(h, agent=agent_command()) for n, h in inv.hosts.items()}
        )
    )

    def vpcctl(*args: str) -> subprocess.CompletedProcess[str]:
        return lab.run(
            admin,
            [sys.executable, "-m", "vpcctl", "-i", str(w.mesh.path), *args, "--live",
             "--known-hosts", str(known), "--connect-timeout", "5"],
            env={"HOME": str(home), "PYTHONPATH": str(ROOT)}, check=False, timeout=120,
        )  # fmt: skip

    b = w.d["h2"].ip_of("db-b", "vpc-prod")
    res = vpcctl("container", "ls", "--json")
    assert res.returncode == 0, res.stderr
    rows = {(r["name"], r["host"]): r for r in json.loads(res.stdout)}
    assert rows[("db-b", "h2")] | {"labels": None} == {
        "vpc": "prod", "name": "db-b", "host": "h2", "ip": b, "fqdn": "db-b.prod.vpc.internal",
        "source": "discovered", "running": True, "ready": True, "labels": None, "note": None,
    }  # fmt: skip
    assert rows[("db-b", "h2")]["labels"]["app"] == "db"
    assert rows[("cli1", "h1")]["source"] == "discovered"
    res = vpcctl("service", "ls", "--json")
    assert res.returncode == 0, res.stderr
    (db,) = json.loads(res.stdout)
    assert db["selector"] == {"app": "db"} and db["vip"] == w.vip
    assert db["live_backends"] == [{"address": b, "name": "db-b", "host": "h2"}]
    # one host cannot be asked: named, exit 4, and its containers still known from the peer
    lab.stop_sshd(w.mesh.hosts["h1"])
    res = vpcctl("container", "ls", "--json")
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert "warning: h1 could not be asked" in res.stderr
    rows = {(r["name"], r["host"]): r for r in json.loads(res.stdout)}
    assert rows[("cli1", "h1")]["running"] is True and rows[("db-b", "h2")]["ready"] is True
