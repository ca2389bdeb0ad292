"""`vpcctl down` and `vpcctl host rm --purge` through the real typer app over fake transports:
the per-host table, --json, exit 4 on a partial failure, and the inventory changed only after
the host was torn down (or with --force)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.builders import public_key
from tests.cli.test_push import rows, run
from tests.fake_transport import FakeHost, FakeNet, agent_error, unreachable
from vpcctl.admin import edits, inventory
from vpcctl.core.model import SshTarget


def _with_spare(path: Path) -> bytes:
    """The homelab plus vps3, a host with no containers (so `host rm` needs no --force)."""
    inventory.update(path, lambda inv: edits.add_host(
        inv, "vps3", SshTarget("198.51.100.30", "root"), endpoint="198.51.100.30:51820",
        public_key=public_key("vps3")))  # fmt: skip
    return path.read_bytes()


def test_down_runs_agent_down_on_every_host_and_leaves_the_inventory(
    runner: CliRunner, net: Path
) -> None:
    before = net.read_bytes()
    fakes = FakeNet(
        {"vps1": FakeHost(torn_down=["delete wireguard vpc0", "delete bridge vb-prod"])}
    )
    result = run(runner, fakes, "down")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    table = rows(result)
    assert sorted(table) == ["nas", "vps1", "vps2"]
    assert table["vps1"].split()[:2] == ["ok", "2"] and "delete bridge vb-prod" in table["vps1"]
    for name in ("nas", "vps1", "vps2"):
        (call,) = fakes.calls(name, "agent down")
        assert call.has("--json") and not call.has("--forget-key")
    assert net.read_bytes() == before and fakes.all_closed


def test_down_json_on_named_hosts_with_forget_key(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet()
    result = run(runner, fakes, "down", "vps2", "--forget-key", "--json")
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["host"] == "vps2" and record["ok"] and record["key"] == "removed"
    assert record["changes"] == ["delete wireguard vpc0"]
    assert fakes.calls("vps2", "agent down")[0].has("--forget-key")
    assert "nas" not in fakes.hosts and "vps1" not in fakes.hosts  # never contacted


def test_down_partial_failure_exits_4_with_the_reason(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({
        "nas": FakeHost(refuse=unreachable("admin@nas.lan:2222")),
        "vps2": FakeHost(answers={"agent down": agent_error("nft: permission denied", "run as root")}),
    })  # fmt: skip
    result = run(runner, fakes, "down")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    table = rows(result)
    assert table["nas"].startswith("FAILED") and "cannot connect" in table["nas"]
    assert table["vps2"].startswith("FAILED") and "nft: permission denied" in table["vps2"]
    assert "run as root" in table["vps2"] and table["vps1"].startswith("ok")


def test_down_of_an_unknown_host_is_an_error_and_contacts_nobody(
    runner: CliRunner, net: Path
) -> None:
    fakes = FakeNet()
    result = run(runner, fakes, "down", "nosuch")
    assert result.exit_code == 1 and "no host named 'nosuch'" in result.stderr
    assert "hint:" in result.stderr and fakes.transports == []


def test_host_rm_purge_tears_down_first_then_removes(runner: CliRunner, net: Path) -> None:
    _with_spare(net)
    fakes = FakeNet()
    result = run(runner, fakes, "host", "rm", "vps3", "--purge")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert len(fakes.calls("vps3", "agent down")) == 1
    assert "vps3" not in inventory.load(net).hosts
    assert "torn down, and out of the inventory" in result.stderr
    assert rows(result)["vps3"].startswith("ok")


def test_host_rm_purge_of_an_unreachable_host_leaves_the_inventory(
    runner: CliRunner, net: Path
) -> None:
    before = _with_spare(net)
    fakes = FakeNet({"vps3": FakeHost(refuse=unreachable("root@198.51.100.30"))})
    result = run(runner, fakes, "host", "rm", "vps3", "--purge")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    assert rows(result)["vps3"].startswith("FAILED") and "cannot connect" in result.stdout
    assert "error: host vps3 was not torn down; the inventory is unchanged" in result.stderr
    assert "hint:" in result.stderr and "--force" in result.stderr
    assert net.read_bytes() == before


def test_host_rm_purge_force_removes_a_host_that_could_not_be_torn_down(
    runner: CliRunner, net: Path
) -> None:
    _with_spare(net)
    fakes = FakeNet({"vps3": FakeHost(answers={"agent down": agent_error("boom")})})
    result = run(runner, fakes, "host", "rm", "vps3", "--purge", "--force")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "vps3" not in inventory.load(net).hosts
    assert "NOT torn down (--force)" in result.stderr and "boom" in result.stdout


def test_host_rm_purge_that_the_inventory_refuses_contacts_no_host(
    runner: CliRunner, net: Path
) -> None:
    before = net.read_bytes()
    fakes = FakeNet()
    for args in (["vps1", "--purge"], ["nosuch", "--purge"]):  # vps1 runs containers
        result = run(runner, fakes, "host", "rm", *args)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and "hint: " in result.stderr
    assert fakes.transports == [] and net.read_bytes() == before


def test_host_rm_without_purge_connects_to_nothing(runner: CliRunner, net: Path) -> None:
    _with_spare(net)
    fakes = FakeNet()
    result = run(runner, fakes, "host", "rm", "vps3")
    assert result.exit_code == 0 and "vps3" not in inventory.load(net).hosts
    assert fakes.transports == []
