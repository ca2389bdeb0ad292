"""Every command through the real typer app: stdout, stderr and exit code, for success and failure.

Data goes to stdout, diagnostics to stderr; a user error is exactly two lines on stderr
(``error: ...`` and ``hint: ...``), exit 1, and leaves the inventory untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from tests.builders import empty, public_key
from tests.cli.conftest import cells, error_lines, json_keys
from tests.unit.test_inventory import CASES
from vpcctl.admin import inventory
from vpcctl.cli.commands import app
from vpcctl.core.spec import from_json


def run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), prog_name="vpcctl", env=env)


def ok(runner: CliRunner, *args: str) -> Result:
    result = run(runner, *args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return result


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def user_error(result: Result, says: str) -> str:
    """Exit 1; nothing on stdout; on stderr one error line and one hint line."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    assert says in lines[0], lines[0]
    return lines[0]


def refused(runner: CliRunner, net: Path, says: str, *args: str) -> str:
    before = snapshot(net)
    line = user_error(run(runner, *args), says)
    assert snapshot(net) == before
    return line


# ---------------------------------------------------------------------------------------------
# init


def test_init_creates_a_canonical_inventory(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = ok(runner, "init", "lab", "--mesh-cidr", "10.91.0.0/24", "--routing", "wireguard")
    assert result.stdout == ""
    assert f"created {tmp_path / 'vpc.toml'} for mesh lab" in result.stderr
    inv = inventory.load(tmp_path / "vpc.toml")
    assert (inv.mesh.name, str(inv.mesh.cidr), inv.mesh.routing) == (
        "lab",
        "10.91.0.0/24",
        "wireguard",
    )
    assert inventory.dump(inv) == (tmp_path / "vpc.toml").read_text()


def test_init_refuses_to_overwrite(runner: CliRunner, net: Path) -> None:
    refused(runner, net, "already exists", "init", "other")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["init", "Home"], "NAME: 'Home' is not a valid mesh name"),
        (["init", "home", "--mesh-cidr", "10.90.0.0/33"], "--mesh-cidr"),
        (["init", "home", "--mesh-cidr", "10.90.0.0/31"], "--mesh-cidr 10.90.0.0/31 is too small"),
        (["init", "home", "--interface", "a-very-long-ifname"], "--interface"),
        (["init", "home", "--domain", "vpc internal"], "--domain"),
        (["init", "home", "--routing", "vxlan"], "--routing: 'vxlan' is not a routing mode"),
        (["init", "home", "--port", "0"], "--port"),
    ],
)
def test_init_refuses_bad_values(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    user_error(run(runner, *args), says)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# hosts


def test_host_add(runner: CliRunner, net: Path) -> None:
    key = public_key("vps3")
    result = ok(
        runner,
        "host",
        "add",
        "vps3",
        "--ssh",
        "root@192.0.2.30",
        "--endpoint",
        "192.0.2.30:51820",
        "--public-key",
        key,
        "--json",
    )
    assert json.loads(result.stdout) == {
        "name": "vps3",
        "ssh": "root@192.0.2.30",
        "address": "10.90.0.4",
        "endpoint": "192.0.2.30:51820",
        "behind_nat": False,
        "public_key": key,
        "agent": None,
        "slices": {"prod": "10.100.3.0/24", "staging": "10.200.3.0/24"},
    }
    assert inventory.load(net).hosts["vps3"].public_key == key

    result = ok(runner, "host", "add", "pi", "--ssh", "pi.lan", "--agent", "sudo -n vpcctl")
    assert result.stdout == ""
    assert "added host pi: mesh address 10.90.0.5" in result.stderr
    assert "behind NAT" in result.stderr
    assert inventory.load(net).hosts["pi"].agent == "sudo -n vpcctl"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bad_name", "--ssh", "x"], "NAME: 'bad_name' is not a valid host name"),
        (["a" * 64, "--ssh", "x"], "is not a valid host name"),
        (["nas", "--ssh", "x"], "host 'nas' already exists"),
        (["prod", "--ssh", "x"], "host name 'prod' is already a VPC name"),
        (["new", "--ssh", "root@@x"], "--ssh"),
        (["new", "--ssh", "x", "--endpoint", "192.0.2.1"], "--endpoint"),
        (["new", "--ssh", "x", "--endpoint", "192.0.2.1:51820\n[Peer]"], "--endpoint"),
        (["new", "--ssh", "x", "--public-key", "abc"], "--public-key"),
        (["new", "--ssh", "x", "--public-key", public_key("nas")], "already belongs to host nas"),
        (["new", "--ssh", "x", "--address", "10.90.0.1"], "already used by host nas"),
        (["new", "--ssh", "x", "--address", "10.91.0.1"], "not a usable address"),
        (["new", "--ssh", "x", "--address", "10.90.0"], "--address"),
        (["new", "--ssh", "x", "--agent", ""], "--agent"),
    ],
)
def test_host_add_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "host", "add", *args)


def test_host_set(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "host", "set", "vps1", "--endpoint", "192.0.2.9:51820")
    assert result.stdout == "" and "updated host vps1" in result.stderr
    assert inventory.load(net).hosts["vps1"].endpoint == "192.0.2.9:51820"
    ok(runner, "host", "set", "vps1", "--no-endpoint")
    assert inventory.load(net).hosts["vps1"].endpoint is None
    ok(runner, "host", "set", "nas", "--public-key", public_key("nas-2"))
    assert inventory.load(net).hosts["nas"].public_key == public_key("nas-2")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope", "--no-endpoint"], "no host named 'nope'"),
        (["nas", "--endpoint", "x"], "--endpoint"),
        (["nas", "--public-key", "x" * 44], "--public-key"),
        (["nas", "--public-key", public_key("vps1")], "already belongs to host vps1"),
    ],
)
def test_host_set_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "host", "set", *args)


def test_host_rm(runner: CliRunner, net: Path) -> None:
    refused(
        runner,
        net,
        "host vps1 still runs containers: prod/db-1, staging/web-1",
        "host",
        "rm",
        "vps1",
    )
    refused(runner, net, "no host named 'nope'", "host", "rm", "nope")
    result = ok(runner, "host", "rm", "vps1", "--force")
    assert result.stdout == "" and "removed host vps1" in result.stderr
    inv = inventory.load(net)
    assert "vps1" not in inv.hosts
    assert "prod/db-1" not in inv.containers
    assert inv.services["prod/db"].backends == ("db-2",)


def test_host_ls(runner: CliRunner, net: Path) -> None:
    rows = ok(runner, "host", "ls").stdout.splitlines()
    assert rows[0].split() == ["NAME", "ADDRESS", "SSH", "ENDPOINT", "PUBLIC", "KEY"]
    assert rows[1].split() == [
        "nas",
        "10.90.0.1",
        "admin@nas.lan:2222",
        "(behind",
        "NAT)",
        public_key("nas"),
    ]
    assert [r.split()[0] for r in rows[1:]] == ["nas", "vps1", "vps2"]
    data = json.loads(ok(runner, "host", "ls", "--json").stdout)
    assert [h["name"] for h in data] == ["nas", "vps1", "vps2"]
    assert data[0]["behind_nat"] is True and data[1]["endpoint"] == "203.0.113.10:51820"


def test_ls_on_an_empty_inventory_says_what_to_do(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok(runner, "init", "home")
    for group in ("host", "vpc", "container", "service"):
        result = ok(runner, group, "ls")
        assert result.stdout == ""
        assert "add one with" in result.stderr
        assert json.loads(ok(runner, group, "ls", "--json").stdout) == []


# ---------------------------------------------------------------------------------------------
# VPCs


def test_vpc_add_ls_rm(runner: CliRunner, net: Path) -> None:
    result = ok(
        runner, "vpc", "add", "dev", "--cidr", "10.50.0.0/16", "--slice-prefix", "26", "--json"
    )
    assert json.loads(result.stdout) == {
        "name": "dev",
        "cidr": "10.50.0.0/16",
        "slice_prefix": 26,
        "services": "10.50.255.192/26",
        "slices": {"nas": "10.50.0.0/26", "vps1": "10.50.0.64/26", "vps2": "10.50.0.128/26"},
    }
    result = ok(
        runner,
        "vpc",
        "add",
        "lab",
        "--cidr",
        "10.60.0.0/24",
        "--slice-prefix",
        "28",
        "--services",
        "10.60.0.0/28",
    )
    assert "added VPC lab 10.60.0.0/24: service VIPs from 10.60.0.0/28; 3 slices" in result.stderr
    rows = ok(runner, "vpc", "ls").stdout.splitlines()
    assert rows[0].split() == [
        "NAME",
        "CIDR",
        "SLICES",
        "SERVICE",
        "RANGE",
        "CONTAINERS",
        "SERVICES",
    ]
    assert [r.split() for r in rows[1:]] == [
        ["dev", "10.50.0.0/16", "/26", "10.50.255.192/26", "0", "0"],
        ["lab", "10.60.0.0/24", "/28", "10.60.0.0/28", "0", "0"],
        ["prod", "10.100.0.0/16", "/24", "10.100.255.0/24", "3", "1"],
        ["staging", "10.200.0.0/16", "/24", "10.200.255.0/24", "2", "1"],
    ]
    data = json.loads(ok(runner, "vpc", "ls", "--json").stdout)
    assert [v["name"] for v in data] == ["dev", "lab", "prod", "staging"]
    result = ok(runner, "vpc", "rm", "dev")
    assert result.stdout == "" and "removed VPC dev" in result.stderr
    assert "dev" not in inventory.load(net).vpcs
    assert all("dev" not in h.slices for h in inventory.load(net).hosts.values())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "prod", "--cidr", "10.1.0.0/16"], "VPC 'prod' already exists"),
        (["add", "nas", "--cidr", "10.1.0.0/16"], "VPC name 'nas' is already a host name"),
        (["add", "Dev", "--cidr", "10.1.0.0/16"], "NAME: 'Dev' is not a valid VPC name"),
        (["add", "dev", "--cidr", "10.1.0.1/16"], "--cidr"),
        (["add", "dev", "--cidr", "10.100.128.0/17"], "overlaps"),
        (["add", "dev", "--cidr", "10.90.0.0/16"], "overlaps"),
        (["add", "dev", "--cidr", "10.1.0.0/24", "--slice-prefix", "24"], "--slice-prefix 24"),
        (["add", "dev", "--cidr", "10.1.0.0/29", "--slice-prefix", "30"], "no free /30 slice"),
        (["rm", "prod"], "VPC prod still has containers or services"),
        (["rm", "nope"], "no VPC named 'nope'"),
    ],
)
def test_vpc_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "vpc", *args)


def test_vpc_rm_force_removes_members(runner: CliRunner, net: Path) -> None:
    ok(runner, "vpc", "rm", "staging", "--force")
    inv = inventory.load(net)
    assert not [k for k in (*inv.containers, *inv.services) if k.startswith("staging/")]


# ---------------------------------------------------------------------------------------------
# containers


def test_container_add_ls_rm(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "container", "add", "api-1", "--vpc", "prod", "--host", "nas", "--json")
    assert json.loads(result.stdout) == {
        "vpc": "prod",
        "name": "api-1",
        "host": "nas",
        "ip": "10.100.0.3",
        "fqdn": "api-1.prod.vpc.internal",
    }
    result = ok(runner, "container", "add", "prod/api-2", "--host", "vps1", "--ip", "10.100.1.50")
    assert (
        result.stdout == "" and "added container prod/api-2 on vps1: 10.100.1.50" in result.stderr
    )
    rows = cells(ok(runner, "container", "ls", "--vpc", "prod", "--host", "nas").stdout)
    assert rows == [
        ["VPC", "NAME", "HOST", "IP", "SOURCE"],
        ["prod", "api-1", "nas", "10.100.0.3", "declared"],
        ["prod", "web-1", "nas", "10.100.0.2", "declared"],
    ]
    assert json_keys(ok(runner, "container", "ls", "--json").stdout) == [
        "prod/api-1",
        "prod/api-2",
        "prod/db-1",
        "prod/db-2",
        "prod/web-1",
        "staging/cache-1",
        "staging/web-1",
    ]
    result = ok(runner, "container", "rm", "api-1", "--vpc", "prod")
    assert result.stdout == "" and "removed container prod/api-1" in result.stderr
    ok(runner, "container", "rm", "prod/api-2")
    assert {"prod/api-1", "prod/api-2"}.isdisjoint(inventory.load(net).containers)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "x", "--host", "nas"], "which VPC is container 'x' in?"),
        (["add", "prod/x", "--vpc", "staging", "--host", "nas"], "conflicts with --vpc staging"),
        (["add", "X", "--vpc", "prod", "--host", "nas"], "'X' is not a valid container name"),
        (["add", "x", "--vpc", "nope", "--host", "nas"], "no VPC named 'nope'"),
        (["add", "x", "--vpc", "prod", "--host", "nope"], "no host named 'nope'"),
        (["add", "db-1", "--vpc", "prod", "--host", "nas"], "container 'prod/db-1' already exists"),
        (["add", "db", "--vpc", "prod", "--host", "nas"], "prod/db is already a service name"),
        (
            ["add", "x", "--vpc", "prod", "--host", "nas", "--ip", "10.100.0.2"],
            "already used in VPC prod",
        ),
        (
            ["add", "x", "--vpc", "prod", "--host", "nas", "--ip", "10.100.1.9"],
            "not a container address",
        ),
        (
            ["add", "x", "--vpc", "prod", "--host", "nas", "--ip", "10.100.0.1"],
            "not a container address",
        ),
        (["add", "x", "--vpc", "prod", "--host", "nas", "--ip", "nope"], "--ip"),
        (["rm", "db-1", "--vpc", "prod"], "container prod/db-1 is a backend of prod/db"),
        (["rm", "nope", "--vpc", "prod"], "no container named 'prod/nope'"),
    ],
)
def test_container_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "container", *args)


def test_container_rm_force_drops_it_from_backends(runner: CliRunner, net: Path) -> None:
    ok(runner, "container", "rm", "prod/db-1", "--force")
    assert inventory.load(net).services["prod/db"].backends == ("db-2",)


# ---------------------------------------------------------------------------------------------
# services


def test_service_add_ls_rm(runner: CliRunner, net: Path) -> None:
    result = ok(
        runner, "service", "add", "web", "--vpc", "prod", "--port", "http=80", "--port", "443/tcp",
        "--backend", "web-1", "--json",
    )  # fmt: skip
    assert json.loads(result.stdout) == {
        "vpc": "prod",
        "name": "web",
        "vip": "10.100.255.2",
        "ports": ["http=80/tcp", "443/tcp"],
        "backends": ["web-1"],
        "selector": {},
        "fqdn": "web.prod.vpc.internal",
    }
    result = ok(runner, "service", "add", "prod/dns", "--port", "53/udp", "--vip", "10.100.255.53")
    assert "added service prod/dns: VIP 10.100.255.53 -> no backends yet" in result.stderr
    rows = cells(ok(runner, "service", "ls", "--vpc", "prod").stdout)
    assert rows == [
        ["VPC", "NAME", "VIP", "PORTS", "BACKENDS", "SELECTOR"],
        ["prod", "db", "10.100.255.1", "postgres=5432/tcp", "9187/tcp", "db-1", "db-2", "-"],
        ["prod", "dns", "10.100.255.53", "53/udp", "-", "-"],
        ["prod", "web", "10.100.255.2", "http=80/tcp", "443/tcp", "web-1", "-"],
    ]
    assert json_keys(ok(runner, "service", "ls", "--json").stdout) == [
        "prod/db",
        "prod/dns",
        "prod/web",
        "staging/cache",
    ]
    result = ok(runner, "service", "rm", "web", "--vpc", "prod")
    assert result.stdout == "" and "removed service prod/web" in result.stderr
    assert "prod/web" not in inventory.load(net).services


def test_service_add_with_selector(runner: CliRunner, net: Path) -> None:
    before = net.read_text()
    result = ok(
        runner, "service", "add", "pg", "--vpc", "prod", "--port", "5432",
        "--selector", "app=db", "--selector", "com.example.tier=primary", "--selector", "app=db",
    )  # fmt: skip
    assert (
        "added service prod/pg: VIP 10.100.255.2 -> containers labelled "
        "app=db,com.example.tier=primary" in result.stderr
    )
    text = net.read_text()
    assert text.startswith(before.split("[services.")[0])
    assert (
        '[services."prod/pg"]\nvip = "10.100.255.2"\nports = [\n    "5432/tcp",\n]\n'
        'backends = []\n\n[services."prod/pg".selector]\napp = "db"\n'
        '"com.example.tier" = "primary"\n'
    ) in text
    svc = inventory.load(net).services["prod/pg"]
    assert svc.selector == (("app", "db"), ("com.example.tier", "primary"))
    assert inventory.dump(inventory.load(net)) == text
    rows = cells(ok(runner, "service", "ls", "--vpc", "prod").stdout)
    assert [
        "prod",
        "pg",
        "10.100.255.2",
        "5432/tcp",
        "-",
        "app=db,com.example.tier=primary",
    ] in rows
    (entry,) = [
        s for s in json.loads(ok(runner, "service", "ls", "--json").stdout) if s["name"] == "pg"
    ]
    assert entry["selector"] == {"app": "db", "com.example.tier": "primary"}
    assert entry["backends"] == []
    # declared backends and a selector together; the spec carries both
    ok(runner, "service", "add", "both", "--vpc", "prod", "--port", "80",
       "--backend", "web-1", "--selector", "app=web")  # fmt: skip
    spec = from_json(ok(runner, "render", "nas", "--format", "json").stdout)
    (both,) = [s for s in spec.services if s.name == "both"]
    assert both.selector == (("app", "web"),) and [str(b) for b in both.backends] == ["10.100.0.2"]


def test_container_and_service_ls_offline_show_declared_state_and_say_so(
    runner: CliRunner, net: Path
) -> None:
    result = ok(runner, "container", "ls", "--json")
    rows = json.loads(result.stdout)
    assert {r["source"] for r in rows} == {"declared"}
    assert rows[0] == {
        "vpc": "prod", "name": "db-1", "host": "vps1", "ip": "10.100.1.2",
        "fqdn": "db-1.prod.vpc.internal", "source": "declared", "running": None, "ready": None,
        "labels": {}, "note": None,
    }  # fmt: skip
    assert "declared containers only (from the inventory); add --live to ask the hosts" in (
        result.stderr
    )
    result = ok(runner, "service", "ls")
    assert "declared backends only" in result.stderr and "LIVE BACKENDS" not in result.stdout


def test_ls_live_names_every_host_it_could_not_ask(
    runner: CliRunner, net: Path, tmp_path: Path
) -> None:
    """Real SSH attempts to loopback ports where nothing listens: refused at once."""
    from dataclasses import replace as dc_replace

    from vpcctl.core.model import SshTarget

    def unreachable(inv: Any) -> Any:
        hosts = {
            n: dc_replace(h, ssh=SshTarget("127.0.0.1", "root", 1 + i))
            for i, (n, h) in enumerate(sorted(inv.hosts.items()))
        }
        return dc_replace(inv, hosts=hosts)

    inventory.update(net, unreachable)
    known = str(tmp_path / "known_hosts")
    for args in (["container", "ls"], ["service", "ls"]):
        result = run(runner, *args, "--live", "--known-hosts", known, "--connect-timeout", "2")
        assert result.exit_code == 4, (result.stdout, result.stderr)
        for host in ("nas", "vps1", "vps2"):
            assert f"warning: {host} could not be asked: " in result.stderr
        assert "3 of 3 hosts could not be asked" in result.stderr
        assert "prod" in result.stdout  # the declared rows are still printed
    result = run(runner, "container", "ls", "--live", "--via", "nas", "--known-hosts", known,
                 "--json")  # fmt: skip
    assert result.exit_code == 4
    assert "warning: nas could not be asked" in result.stderr and "vps1" not in result.stderr
    assert {r["running"] for r in json.loads(result.stdout)} == {None}  # not known
    refused(runner, net, "no host named 'nope'", "container", "ls", "--live", "--via", "nope")


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        ("app", "is not KEY=VALUE"),
        ("=db", "is not a valid label key"),
        ("App=db", "is not a valid label key"),
        ("app..x=db", "is not a valid label key"),
        ("-app=db", "is not a valid label key"),
        ("app.=db", "is not a valid label key"),
        ("a b=c", "is not a valid label key"),
        ("app=db\nx", "is not a valid label value"),
        ("app=" + "v" * 256, "is not a valid label value"),
        ("k" * 129 + "=v", "is not a valid label key"),
    ],
)
def test_service_selector_refused(runner: CliRunner, net: Path, selector: str, says: str) -> None:
    line = refused(runner, net, says, "service", "add", "x", "--vpc", "prod", "--port", "80",
                   "--selector", selector)  # fmt: skip
    assert line.startswith("error: --selector: ")


def test_service_selector_with_two_values_of_one_key_is_refused(
    runner: CliRunner, net: Path
) -> None:
    refused(runner, net, "label 'app' selected as both 'db' and 'web'", "service", "add", "x",
            "--vpc", "prod", "--port", "80", "--selector", "app=db", "--selector", "app=web")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "x", "--vpc", "prod", "--port", "80", "--backend", "cache-1"], "no container in VPC prod named 'cache-1'"),
        (["add", "x", "--vpc", "prod", "--port", "80/sctp"], "--port"),
        (["add", "x", "--vpc", "prod", "--port", "80", "--backend", "Web"], "--backend"),
        (["add", "db", "--vpc", "prod", "--port", "80"], "service 'prod/db' already exists"),
        (["add", "web-1", "--vpc", "prod", "--port", "80"], "prod/web-1 is already a container name"),
        (["add", "x", "--vpc", "prod", "--port", "80", "--vip", "10.100.255.1"], "already used"),
        (["add", "x", "--vpc", "prod", "--port", "80", "--vip", "10.100.0.5"], "outside VPC prod's service range"),
        (["add", "x", "--vpc", "nope", "--port", "80"], "no VPC named 'nope'"),
        (["add", "x", "--vpc", "prod", "--port", "80", "--port", "80/tcp"], "port 80/tcp listed twice"),
        (["rm", "nope", "--vpc", "prod"], "no service named 'prod/nope'"),
    ],
)  # fmt: skip
def test_service_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "service", *args)


# ---------------------------------------------------------------------------------------------
# check, render, resolve


def test_check_ok(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "check")
    assert result.stdout == ""
    assert f"{net}: ok (3 hosts, 2 VPCs, 5 containers, 2 services)" in result.stderr
    assert "not in canonical form" not in result.stderr
    assert json.loads(ok(runner, "check", "--json").stdout) == {
        "ok": True,
        "problems": [],
        "warnings": [],
        "canonical": True,
    }


def test_check_notes_hand_edits_and_warnings(runner: CliRunner, net: Path) -> None:
    net.write_text("# hand edited\n" + net.read_text())
    ok(runner, "host", "add", "pi", "--ssh", "pi.lan")  # rewrites canonically...
    net.write_text("# hand edited\n" + net.read_text())  # ...so edit again
    result = ok(runner, "check")
    assert "not in canonical form; the next vpcctl write will rewrite it" in result.stderr
    assert "nas, pi are behind NAT" in result.stderr and "through a relay" in result.stderr
    assert "without a public key yet: pi" in result.stderr
    data = json.loads(ok(runner, "check", "--json").stdout)
    assert data["ok"] is True and data["canonical"] is False and len(data["warnings"]) == 2


def test_check_reports_every_problem(runner: CliRunner, net: Path) -> None:
    text = net.read_text().replace('address = "10.90.0.2"', 'address = "10.90.0.1"')
    net.write_text(text.replace('ip = "10.100.2.2"', 'ip = "10.100.1.2"'))
    before = snapshot(net)
    result = run(runner, "check")
    assert result.exit_code == 1 and result.stdout == ""
    assert error_lines(result.stderr) == [
        f"error: {net}: hosts.vps1.address: 10.90.0.1 is also the address of host nas",
        f'error: {net}: containers."prod/db-2".ip: 10.100.1.2 is not a container address of '
        "vps2's slice 10.100.2.0/24",
        f'error: {net}: containers."prod/db-2".ip: 10.100.1.2 is also the address of container '
        "prod/db-1",
    ]
    assert result.stderr.count("hint: ") == 3
    data = json.loads(run(runner, "check", "--json").stdout)
    assert data["ok"] is False and len(data["problems"]) == 3
    assert snapshot(net) == before


def test_check_reports_a_file_error_on_one_line(runner: CliRunner, net: Path) -> None:
    net.write_text(net.read_text().replace('routing = "ipip"', 'routing = "ipip"\nmss = 9000'))
    user_error(run(runner, "check"), f"{net}: mesh.mss: unknown key")
    net.write_text(net.read_text() + "[hosts.nas\n")
    user_error(run(runner, "check"), f"{net}: ")


def test_every_command_refuses_an_invalid_inventory(runner: CliRunner, net: Path) -> None:
    net.write_text(net.read_text().replace('endpoint = "203.0.113.10:51820"', 'endpoint = "nope"'))
    for args in (
        ["host", "ls"],
        ["vpc", "ls"],
        ["container", "ls"],
        ["service", "ls"],
        ["render", "nas"],
        ["resolve", "db"],
        ["host", "add", "x", "--ssh", "x"],
        ["container", "add", "x", "--vpc", "prod", "--host", "nas"],
    ):
        refused(
            runner, net, f"{net}: hosts.vps1.endpoint: 'nope' is not a HOST:PORT endpoint", *args
        )


def test_render(runner: CliRunner, net: Path) -> None:
    spec = from_json(ok(runner, "render", "vps1").stdout)
    assert spec.host == "vps1" and [p.name for p in spec.peers] == ["nas", "vps2"]
    assert (
        ok(runner, "render", "vps1", "--format", "json").stdout
        == ok(runner, "render", "vps1").stdout
    )
    text = ok(runner, "render", "nas", "-f", "wg-quick").stdout
    assert text.startswith("# vpcctl mesh home, host nas") and text.count("[Peer]") == 2
    refused(runner, net, "no host named 'nope'", "render", "nope")
    refused(runner, net, "--format: 'yaml' is not a format", "render", "nas", "--format", "yaml")


def test_resolve(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "resolve", "db", "--from", "prod/web-1")
    assert result.stdout == "db. 5 IN A 10.100.255.1\n" and result.stderr == ""
    assert (
        ok(runner, "resolve", "web-1", "--from", "staging").stdout == "web-1. 5 IN A 10.200.1.2\n"
    )
    assert (
        ok(runner, "resolve", "cache-1", "--from", "cache-1").stdout
        == "cache-1. 5 IN A 10.200.2.2\n"
    )
    full = ok(runner, "resolve", "db-1.prod.vpc.internal")
    assert full.stdout == "db-1.prod.vpc.internal. 5 IN A 10.100.1.2\n"
    ptr = ok(runner, "resolve", "10.100.1.2", "--type", "ptr")
    assert ptr.stdout == "2.1.100.10.in-addr.arpa. 5 IN PTR db-1.prod.vpc.internal.\n"
    srv = ok(runner, "resolve", "_postgres._tcp.db", "--from", "prod", "-t", "SRV")
    assert srv.stdout == "_postgres._tcp.db. 5 IN SRV 0 0 5432 db.prod.vpc.internal.\n"
    nodata = ok(runner, "resolve", "db-1.prod.vpc.internal", "--type", "AAAA")
    assert nodata.stdout == "" and "exists, but has no AAAA record" in nodata.stderr
    forward = ok(runner, "resolve", "example.com")
    assert forward.stdout == "" and "forwards it upstream" in forward.stderr
    data = json.loads(ok(runner, "resolve", "db", "--from", "prod", "--json").stdout)
    assert data == {
        "name": "db",
        "type": "A",
        "rcode": "NOERROR",
        "answers": [{"name": "db", "type": "A", "ttl": 5, "data": ["10.100.255.1"]}],
        "authority": [],
    }


def test_resolve_failures(runner: CliRunner, net: Path) -> None:
    result = run(runner, "resolve", "db", "--from", "staging/web-1")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "db: NXDOMAIN\n"
    data = json.loads(run(runner, "resolve", "db-1", "--from", "staging", "--json").stdout)
    assert data["rcode"] == "NXDOMAIN" and data["authority"][0]["type"] == "SOA"
    refused(
        runner,
        net,
        "--from 'web-1' names containers in several VPCs",
        "resolve",
        "db",
        "--from",
        "web-1",
    )
    refused(runner, net, "--from 'nope' is no container or VPC", "resolve", "db", "--from", "nope")


# ---------------------------------------------------------------------------------------------
# help, usage errors, --version


def _leaf_commands() -> list[list[str]]:
    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append(path)

    walk(typer.main.get_command(app), [])
    return sorted(out)


LEAVES = _leaf_commands()


def test_every_command_is_covered() -> None:
    assert [" ".join(p) for p in LEAVES] == [
        "agent",
        "check",
        "client add", "client ls", "client rm",
        "container add", "container ls", "container rm",
        "dns serve",
        "doctor",
        "down",
        "graph",
        "host add", "host bootstrap", "host ls", "host rm", "host rotate-key", "host set",
        "init",
        "join",
        "mesh set",
        "plan",
        "render",
        "resolve",
        "rotate-psk",
        "service add", "service ls", "service rm",
        "status",
        "sync",
        "up",
        "vpc add", "vpc ls", "vpc rm",
    ]  # fmt: skip


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_help_has_an_example(runner: CliRunner, path: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = ok(runner, *path, flag)
        assert "Example" in result.stdout
        assert f"vpcctl {' '.join(path)}" in result.stdout  # the example uses the command


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["--bogus"],
        ["host", "bogus"],
        ["host", "add"],
        ["host", "add", "x"],
        ["host", "add", "x", "--ssh"],
        ["init", "x", "--port", "abc"],
        ["vpc", "add", "x"],
        ["vpc", "add", "x", "--cidr", "10.1.0.0/16", "--slice-prefix", "x"],
        ["container", "add", "x"],
        ["service", "add", "x", "--vpc", "prod"],
        ["render"],
        ["resolve"],
        ["check", "extra"],
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, net: Path, args: list[str]) -> None:
    before = snapshot(net)
    result = run(runner, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    error, hint = result.stderr.splitlines()  # one error line, one hint line
    assert error.startswith("error: ") and len(error) > len("error: ") + 10, error
    assert hint.startswith("hint: see `vpcctl"), hint
    assert snapshot(net) == before


def test_version(runner: CliRunner) -> None:
    result = ok(runner, "--version")
    assert result.stdout.startswith("vpcctl ") and result.stdout.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# finding the inventory


def _two_inventories(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/walk/vpc.toml`` (mesh "walk") and ``tmp/other.toml`` (mesh "other")."""
    walk, other = tmp_path / "walk" / "vpc.toml", tmp_path / "other.toml"
    walk.parent.mkdir()
    inventory.create(walk, empty(name="walk"))
    inventory.create(other, empty(name="other"))
    return walk, other


def test_inventory_is_found_walking_up_from_the_cwd(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk, _ = _two_inventories(tmp_path)
    deep = walk.parent / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    result = ok(runner, "check")
    assert f"{walk}: ok" in result.stderr
    ok(runner, "host", "add", "nas", "--ssh", "nas.lan")
    assert "nas" in inventory.load(walk).hosts
    assert not (deep / "vpc.toml").exists()


def test_explicit_path_then_environment_then_walk(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk, other = _two_inventories(tmp_path)
    monkeypatch.chdir(walk.parent)
    env = {"VPCCTL_INVENTORY": str(other)}
    assert f"{walk}: ok" in ok(runner, "check").stderr
    assert f"{other}: ok" in run(runner, "check", env=env).stderr
    assert f"{walk}: ok" in run(runner, "-i", str(walk), "check", env=env).stderr
    assert f"{other}: ok" in ok(runner, "--inventory", str(other), "check").stderr
    result = run(runner, "host", "add", "nas", "--ssh", "nas.lan", env=env)
    assert result.exit_code == 0
    assert "nas" in inventory.load(other).hosts and "nas" not in inventory.load(walk).hosts


def test_no_inventory_anywhere(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = user_error(run(runner, "host", "ls"), "no vpc.toml in")
    assert "or any parent directory" in line
    result = run(runner, "check")
    assert (
        "hint: run `vpcctl init NAME` to create one, or point to it with -i PATH or $VPCCTL_INVENTORY"
        in result.stderr
    )
    user_error(
        run(runner, "-i", str(tmp_path / "missing.toml"), "host", "ls"),
        "missing.toml: no such file",
    )


def test_init_honours_i_and_the_environment(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok(runner, "-i", "nets/a.toml", "init", "a")
    assert inventory.load(tmp_path / "nets" / "a.toml").mesh.name == "a"
    result = run(runner, "init", "b", env={"VPCCTL_INVENTORY": str(tmp_path / "b.toml")})
    assert result.exit_code == 0
    assert inventory.load(tmp_path / "b.toml").mesh.name == "b"
    assert not (tmp_path / "vpc.toml").exists()


# ---------------------------------------------------------------------------------------------
# an invalid file: every case of the unit tests, through a write command


@pytest.mark.parametrize(("mutate", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_write_to_an_invalid_file_is_refused_and_changes_nothing(
    runner: CliRunner, net: Path, mutate: Any, says: str
) -> None:
    net.write_text(mutate(net.read_text()))
    line = refused(runner, net, says, "host", "add", "mini", "--ssh", "mini.lan")
    assert line.startswith(f"error: {net}: ") and line.isprintable()


def test_mesh_set_the_agent_daemon(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "mesh", "set", "--daemon", "--grace", "8")
    assert "daemon on, port 51821, grace 8 s" in result.stderr
    m = inventory.load(net).mesh
    assert (m.daemon, m.daemon_port, m.grace) == (True, 51821, 8)
    assert "daemon = true" in net.read_text() and "grace = 8" in net.read_text()
    ok(runner, "mesh", "set", "--no-daemon", "--daemon-port", "51900")
    m = inventory.load(net).mesh
    assert (m.daemon, m.daemon_port, m.grace) == (False, 51900, 8)
    assert "daemon =" not in net.read_text()  # the default is not written


def test_mesh_set_mtu_for_a_smaller_underlay(runner: CliRunner, net: Path) -> None:
    result = ok(runner, "mesh", "set", "--mtu", "1320")
    assert "mtu 1320" in result.stderr and "mtu = 1320" in net.read_text()
    assert inventory.load(net).mesh.mtu == 1320
    ok(runner, "mesh", "set", "--mtu", "1420")
    assert "mtu =" not in net.read_text()  # the default is not written


@pytest.mark.parametrize(("args", "says"), [(["--grace", "0"], "--grace"),
                                            (["--daemon-port", "70000"], "--daemon-port"),
                                            (["--mtu", "1279"], "--mtu"),
                                            (["--mtu", "9001"], "--mtu")])  # fmt: skip
def test_mesh_set_refused(runner: CliRunner, net: Path, args: list[str], says: str) -> None:
    refused(runner, net, says, "mesh", "set", *args)
