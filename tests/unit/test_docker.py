"""The pure parts of vpcctl/host/docker.py, on inspect output recorded from a real dockerd 20.10
(tests/unit/data/docker_inspect.json: a vpcctl network vpc-prod on bridge vb-prod, containers
db-1 with a HEALTHCHECK, web_1 with a fixed --ip, "other" on the default bridge, Sick stopped)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from tests.builders import homelab
from vpcctl.admin.render import render
from vpcctl.core.endpoints import Endpoint
from vpcctl.core.spec import HostSpec, VpcSpec
from vpcctl.host import docker

REC: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "docker_inspect.json").read_text()
)
VPC_OF = {"vpc-prod": "prod"}


def spec() -> HostSpec:
    s = render(homelab(routing="wireguard"), "vps1")
    prod = VpcSpec(
        name="prod", cidr=IPv4Network("10.100.0.0/16"), slice=IPv4Network("10.100.1.0/24"),
        gateway=IPv4Interface("10.100.1.1/24"), bridge="vb-prod", mtu=1420,
    )  # fmt: skip
    return replace(s, mesh="home", host="h1", interface="vpc0", vpcs=(prod,), tunnel=None)


def containers() -> list[dict[str, Any]]:
    return copy.deepcopy(REC["containers"])


def network(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(n for n in REC["networks"] if n["Name"] == name))


# -- containers -> endpoints ------------------------------------------------------------------


def test_running_containers_on_vpc_networks_become_endpoints() -> None:
    got = docker.endpoints_from_inspect("h1", containers(), VPC_OF)
    assert [(e.vpc, e.name, str(e.address), e.ready) for e in got] == [
        ("prod", "db-1", "10.100.1.128", True),  # Docker's half of the slice
        ("prod", "web-1", "10.100.1.2", True),  # compose-v1 style web_1 -> web-1; no healthcheck
    ]
    db = got[0]
    assert db.host == "h1"
    assert ("app", "db") in db.labels
    assert list(db.labels) == sorted(db.labels)


def test_health_maps_to_ready() -> None:
    healthy, unhealthy = REC["db_1_healthy"], REC["db_1_unhealthy"]
    assert healthy["State"]["Health"]["Status"] == "healthy"
    assert unhealthy["State"]["Health"]["Status"] == "unhealthy"
    assert docker.endpoints_of("h1", healthy, VPC_OF)[0].ready is True
    assert docker.endpoints_of("h1", unhealthy, VPC_OF)[0].ready is False
    starting = copy.deepcopy(healthy)
    starting["State"]["Health"]["Status"] = "starting"
    assert docker.endpoints_of("h1", starting, VPC_OF)[0].ready is False
    paused = copy.deepcopy(healthy)
    paused["State"]["Paused"] = True
    assert docker.endpoints_of("h1", paused, VPC_OF)[0].ready is False


def test_stopped_foreign_network_and_bad_names_are_left_out() -> None:
    by_name = {c["Name"]: c for c in containers()}
    assert docker.endpoints_of("h1", by_name["/Sick"], VPC_OF) == ()  # stopped
    assert docker.endpoints_of("h1", by_name["/other"], VPC_OF) == ()  # default bridge only
    assert docker.endpoints_of("h1", by_name["/db-1"], {}) == ()  # no vpcctl network
    bad = by_name["/db-1"]
    bad["Name"] = "/not.a.label"
    assert docker.endpoints_of("h1", bad, VPC_OF) == ()
    bad["Config"]["Labels"][docker.LABEL_NAME] = "db-primary"  # the label overrides the name
    assert docker.endpoints_of("h1", bad, VPC_OF)[0].name == "db-primary"


def test_endpoint_values_are_what_the_exchange_carries() -> None:
    e = docker.endpoints_of("h1", REC["db_1_healthy"], VPC_OF)[0]
    assert isinstance(e, Endpoint) and e.address == IPv4Address("10.100.1.128")


def test_vpc_networks_reads_the_labels() -> None:
    assert docker.vpc_networks(REC["networks"]) == {"vpc-prod": "prod"}
    assert docker.vpc_networks(REC["networks"], "home") == {"vpc-prod": "prod"}
    assert docker.vpc_networks(REC["networks"], "other-mesh") == {}


# -- networks ---------------------------------------------------------------------------------


def test_wanted_network_options() -> None:
    (w,) = docker.wanted_networks(spec())
    assert w.name == "vpc-prod" and w.subnet == IPv4Network("10.100.1.0/24")
    assert w.gateway == IPv4Address("10.100.1.1")
    assert w.ip_range == IPv4Network("10.100.1.128/25")
    opts = dict(w.options)
    assert opts[docker.OPT_BRIDGE] == "vb-prod"
    assert opts[docker.OPT_MASQ] == "false"
    assert opts[docker.OPT_MTU] == "1420"
    assert opts[docker.OPT_GATEWAY_MODE] == "routed"
    assert opts[docker.OPT_TRUSTED] == "vpc0"
    assert dict(w.labels) == {"io.vpcctl.mesh": "home", "io.vpcctl.vpc": "prod",
                              "io.vpcctl.host": "h1"}  # fmt: skip


def test_the_recorded_network_is_exactly_what_vpcctl_wants() -> None:
    (w,) = docker.wanted_networks(spec())
    assert docker.differences(w, network("vpc-prod")) == []
    p = docker.plan_networks([w], REC["networks"], "home")
    assert p.ok == ("vpc-prod",) and not p.create and not p.remove and not p.problems


def test_missing_networks_are_created_and_differing_ones_recreated_when_unused() -> None:
    (w,) = docker.wanted_networks(spec())
    p = docker.plan_networks([w], [network("bridge")], "home")
    assert p.create == (w,) and not p.problems
    other_mtu = replace(w, options=tuple((k, "1300" if k == docker.OPT_MTU else v)
                                         for k, v in w.options))  # fmt: skip
    net = network("vpc-prod")
    net["Containers"] = {}
    p = docker.plan_networks([other_mtu], [net], "home")
    assert p.remove == (net["Id"],) and p.create == (other_mtu,)
    net["Containers"] = {"abc": {}}
    p = docker.plan_networks([other_mtu], [net], "home")
    assert not p.remove and not p.create
    assert "containers use it" in p.problems[0] and "hint:" in p.problems[0]


def test_foreign_networks_are_reported_never_touched() -> None:
    (w,) = docker.wanted_networks(spec())
    foreign = network("vpc-prod")
    foreign["Labels"] = {}
    p = docker.plan_networks([w], [foreign], "home")
    assert not p.create and not p.remove
    assert (
        "vpcctl did not create" in p.problems[0] and "docker network rm vpc-prod" in p.problems[0]
    )
    on_bridge = network("vpc-prod")
    on_bridge["Name"], on_bridge["Labels"] = "homegrown", {}
    p = docker.plan_networks([w], [on_bridge], "home")
    assert not p.create and not p.remove and "already uses bridge vb-prod" in p.problems[0]


def test_networks_of_vpcs_gone_from_the_spec_are_removed_and_other_meshes_kept() -> None:
    ours = network("vpc-prod")
    ours["Containers"] = {}
    assert docker.plan_networks([], [ours], "home").remove == (ours["Id"],)
    assert docker.plan_networks([], [ours], "elsewhere").remove == ()
    ours["Containers"] = {"abc": {}}
    p = docker.plan_networks([], [ours], "home")
    assert p.remove == () and "left in place" in p.problems[0]


def test_docker_user_rules_open_the_mesh_interfaces_to_each_bridge() -> None:
    rules = docker.user_rules(spec())
    assert rules == [
        ["-d", "10.100.1.0/24", "-i", "vpc0", "-o", "vb-prod",
         "-m", "comment", "--comment", "vpcctl:home", "-j", "ACCEPT"],
        ["-s", "10.100.1.0/24", "-i", "vb-prod", "-o", "vpc0",
         "-m", "comment", "--comment", "vpcctl:home", "-j", "ACCEPT"],
    ]  # fmt: skip
    with_tunnel = render(homelab(routing="ipip"), "vps1")
    ifs = {r[3] for r in docker.user_rules(with_tunnel)} | {
        r[5] for r in docker.user_rules(with_tunnel)
    }
    assert with_tunnel.tunnel is not None and with_tunnel.tunnel.name in ifs


# -- dns --------------------------------------------------------------------------------------


def test_dns_report_counts_containers_that_use_the_gateway() -> None:
    r = docker.dns_report(spec(), containers(), [])
    (row,) = r["networks"]
    assert row["gateway"] == "10.100.1.1"
    assert (row["containers"], row["with_resolver"], row["without"]) == (2, 1, ["web_1"])
    assert r["containers_get_resolver"] == "some"
    assert (
        docker.dns_report(spec(), containers(), ["10.100.1.1"])["containers_get_resolver"] == "all"
    )
    assert docker.dns_report(spec(), [], [])["containers_get_resolver"] == "no containers"


def test_daemon_json_dns(tmp_path: Path) -> None:
    f = tmp_path / "daemon.json"
    assert docker.read_daemon_dns(f) == []
    f.write_text('{"dns": ["10.100.1.1", "1.1.1.1"]}')
    assert docker.read_daemon_dns(f) == ["10.100.1.1", "1.1.1.1"]
    f.write_text("not json")
    assert docker.read_daemon_dns(f) == []


@pytest.mark.parametrize(
    ("env", "path"),
    [({}, "/var/run/docker.sock"), ({"DOCKER_HOST": "unix:///run/x/d.sock"}, "/run/x/d.sock"),
     ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, None)],
)  # fmt: skip
def test_where_the_daemon_is(env: dict[str, str], path: str | None) -> None:
    got = docker.socket_path(docker.docker_url(env))
    assert (str(got) if got else None) == path


def test_no_docker_means_nothing_happens(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/none.sock"
    assert not docker.present(url) and docker.socket_stamp(url) is None
    assert docker.ensure_networks(spec(), url).to_json()["present"] is False
    assert docker.status(spec(), url) == {"present": False}


def test_discovery_for_a_host_without_docker_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"unix://{tmp_path}/none.sock"
    monkeypatch.setenv("PATH", str(tmp_path))  # no dockerd installed either
    assert docker.discovery_for(spec(), None, url) is None
    (tmp_path / "none.sock").touch()
    found = docker.discovery_for(spec(), None, url)
    assert isinstance(found, docker.DockerDiscovery) and found.host == "h1" and found.mesh == "home"


def test_the_docker_client_is_imported_without_paramiko() -> None:
    """docker-py's optional ssh:// transport would pull paramiko (~18 MB) into the agent daemon;
    the host never needs it, and paramiko stays importable afterwards."""
    import subprocess
    import sys

    code = (
        "import sys; from vpcctl.host import docker as d; d._errors(); import docker; "
        "docker.APIClient; assert 'paramiko' not in sys.modules; import paramiko; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
