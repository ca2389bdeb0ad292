"""Issue 13 item 3 in the lab: a roaming client brought up from the config `vpcctl client add`
printed (parsed, never rebuilt from the inventory), with wg-quick's steps done by hand:
wireguard-go, `wg setconf` with the [Interface]/[Peer] parts, the address, the routes.

World (module-scoped): an admin namespace driving two hosts over real SSH (`gw`, the gateway
with an endpoint, and `h2`), VPCs prod and dev with a container each on h2 (not the gateway),
and a client namespace `cl` on the underlay with nothing but WireGuard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabContainer, LabHost, ping
from tests.lab.mesh import wait_ping
from tests.lab.sshmesh import SshMesh

pytestmark = pytest.mark.lab

WG = "wgc"  # the client's WireGuard interface
WG_QUICK_ONLY = ("Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown")


def parse_wg_quick(text: str) -> tuple[dict[str, list[str]], str]:
    """wg-quick's own keys of [Interface] (Address, DNS, MTU), and the rest as `wg setconf`
    text (what `wg-quick strip` prints)."""
    quick: dict[str, list[str]] = {}
    setconf: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if sep and key in WG_QUICK_ONLY:
            quick.setdefault(key, []).extend(v.strip() for v in value.split(","))
        else:
            setconf.append(line)
    return quick, "\n".join(setconf) + "\n"


def printed_config(stdout: str) -> str:
    """The config part of `client add`'s output: every line before the QR code's first row."""
    lines = stdout.splitlines()
    end = next(i for i, ln in enumerate(lines) if not ln.isascii())
    return "\n".join(lines[:end]).rstrip() + "\n"


@dataclass
class World:
    mesh: SshMesh
    client: LabHost
    db: LabContainer  # prod, on h2
    other: LabContainer  # dev, on h2
    config: str
    dns: str
    h2_mesh: str


def bring_up(lab: Lab, who: LabHost, config: str) -> tuple[dict[str, list[str]], str]:
    quick, setconf = parse_wg_quick(config)
    conf = lab.workdir / "client-setconf.conf"
    conf.write_text(setconf)
    conf.chmod(0o600)
    lab.run(who, ["wireguard-go", WG])
    lab.run(who, ["wg", "setconf", WG, str(conf)])
    for addr in quick["Address"]:
        lab.run(who, ["ip", "addr", "add", addr, "dev", WG])
    lab.run(who, ["ip", "link", "set", WG, "mtu", quick["MTU"][0], "up"])
    allowed = [ln.partition("=")[2] for ln in setconf.splitlines() if ln.startswith("AllowedIPs")]
    for net in ",".join(allowed).split(","):
        lab.run(who, ["ip", "route", "add", net.strip(), "dev", WG])
    return quick, setconf


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab()
    with Lab(tmp_path_factory.mktemp("clientlab")) as lab:
        m = SshMesh(lab)
        for host in ("gw", "h2"):  # gw: the client's gateway; h2 runs the containers
            m.add_host(host)
        for vpc, cidr, container in (("prod", "10.100.0.0/16", "db-1"),
                                     ("dev", "10.101.0.0/16", "web-1")):  # fmt: skip
            m.vpcctl("vpc", "add", vpc, "--cidr", cidr)
            m.vpcctl("container", "add", container, "--vpc", vpc, "--host", "h2")
        added = m.vpcctl("client", "add", "laptop", "--via", "gw", "--vpc", "prod")
        res = m.vpcctl("up", "--json")
        assert all(r["ok"] for r in json.loads(res.stdout)), res.stdout
        ips = {c["name"]: c["ip"] for c in m.vpcctl_json("container", "ls")}
        db = lab.add_container(m.hosts["h2"], "db-1", "vb-prod", f"{ips['db-1']}/24",
                               ips["db-1"].rsplit(".", 1)[0] + ".1")  # fmt: skip
        other = lab.add_container(m.hosts["h2"], "web-1", "vb-dev", f"{ips['web-1']}/24",
                                  ips["web-1"].rsplit(".", 1)[0] + ".1")  # fmt: skip
        config = printed_config(added.stdout)
        client = lab.add_host("cl")
        quick, _ = bring_up(lab, client, config)
        yield World(m, client, db, other, config, quick["DNS"][0], m.address("h2"))


def dig(w: World, name: str) -> str:
    res = w.mesh.lab.run(
        w.client, ["dig", f"@{w.dns}", name, "A", "+short", "+time=1", "+tries=1"], check=False
    )
    return res.stdout.strip() if res.returncode == 0 else f"rc={res.returncode}"


def test_a_config_names_the_gateway_resolver_and_the_vpc_domain(world: World) -> None:
    quick, setconf = parse_wg_quick(world.config)
    assert quick["DNS"][1:] == ["prod.vpc.internal"]
    assert "PrivateKey = " in setconf and "AllowedIPs = 10.100.0.0/16" in setconf
    inventory_text = world.mesh.inventory.read_text()
    private = next(ln for ln in setconf.splitlines() if ln.startswith("PrivateKey"))
    assert private.partition("=")[2].strip() not in inventory_text


def test_b_client_pings_and_resolves_a_container_on_another_host(world: World) -> None:
    assert wait_ping(world.mesh.lab, world.client, world.db.ip), "client -> db-1 (on h2)"
    assert dig(world, "db-1.prod.vpc.internal") == world.db.ip
    assert dig(world, "db-1") == world.db.ip  # the short form, in its first VPC


def test_c_client_cannot_reach_a_vpc_or_host_it_was_not_given(world: World) -> None:
    lab = world.mesh.lab
    assert "web-1" not in dig(world, "web-1.dev.vpc.internal")
    assert dig(world, "web-1.dev.vpc.internal") == ""  # NXDOMAIN: +short prints nothing
    # a hostile client widens its own AllowedIPs and routes: the gateway still drops it
    peer = next(ln for ln in parse_wg_quick(world.config)[1].splitlines()
                if ln.startswith("PublicKey")).partition("=")[2].strip()  # fmt: skip
    lab.run(world.client, ["wg", "set", WG, "peer", peer, "allowed-ips",
                           "10.100.0.0/16,10.101.0.0/16,10.90.0.0/24"])  # fmt: skip
    lab.run(world.client, ["ip", "route", "add", "10.101.0.0/16", "dev", WG])
    lab.run(world.client, ["ip", "route", "add", "10.90.0.0/24", "dev", WG])
    assert wait_ping(lab, world.client, world.db.ip)  # still reaches its own VPC
    assert ping(lab, world.client, world.other.ip, count=2)[1] == 0, "client -> dev"
    assert ping(lab, world.client, world.h2_mesh, count=2)[1] == 0, "client -> h2's mesh address"


def test_d_after_client_rm_and_up_it_reaches_nothing(world: World) -> None:
    lab = world.mesh.lab
    world.mesh.vpcctl("client", "rm", "laptop")
    res = world.mesh.vpcctl("up", "--json")
    assert all(r["ok"] for r in json.loads(res.stdout)), res.stdout
    assert ping(lab, world.client, world.db.ip, count=2)[1] == 0
    assert dig(world, "db-1.prod.vpc.internal").startswith("rc=")  # no answer at all
    gw = world.mesh.hosts["gw"]
    peers = lab.run(gw, ["wg", "show", "vpc0", "peers"]).stdout.split()
    assert len(peers) == 1  # h2 only: the client's key is gone
