"""`init --psk`, `mesh set --psk/--no-psk`, `rotate-psk`, `host rotate-key`: options and bad input
(one error line, one hint, nothing changed); the setting reaches the HostSpec and never a key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli.test_commands import ok, refused, run, snapshot
from vpcctl.admin import inventory
from vpcctl.core.spec import from_json


def test_init_psk_writes_the_setting(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok(runner, "init", "home", "--psk")
    assert "psk = true" in (tmp_path / "vpc.toml").read_text()
    assert inventory.load(tmp_path / "vpc.toml").mesh.psk


def test_mesh_set_psk_on_and_off_and_the_spec_says_so_with_no_key(
    runner: CliRunner, net: Path
) -> None:
    result = ok(runner, "mesh", "set", "--psk")
    assert "preshared keys on" in result.stderr
    assert "psk = true" in net.read_text()
    spec_text = ok(runner, "render", "nas").stdout
    data = json.loads(spec_text)
    assert data["psk"] is True and "preshared" not in spec_text
    assert from_json(spec_text).psk
    ok(runner, "mesh", "set", "--no-psk")
    assert "psk" not in net.read_text()
    assert "psk" not in json.loads(ok(runner, "render", "nas").stdout)


@pytest.mark.parametrize("value", ['"yes"', "1", "[]"])
def test_a_hand_edited_psk_must_be_a_boolean(runner: CliRunner, net: Path, value: str) -> None:
    net.write_text(
        net.read_text().replace('routing = "ipip"\n', f'routing = "ipip"\npsk = {value}\n')
    )
    refused(runner, net, "mesh.psk", "check")


def test_rotate_psk_needs_preshared_keys_on_and_known_hosts(runner: CliRunner, net: Path) -> None:
    refused(runner, net, "has no preshared keys to rotate", "rotate-psk")
    ok(runner, "mesh", "set", "--psk")
    refused(runner, net, "no host named 'nope'", "rotate-psk", "nope")


def test_rotate_key_of_an_unknown_host_changes_nothing(runner: CliRunner, net: Path) -> None:
    refused(runner, net, "no host named 'nope'", "host", "rotate-key", "nope")


@pytest.mark.parametrize(
    "args",
    [
        ["mesh", "set", "--psk=maybe"],
        ["init", "x", "--psk", "yes"],
        ["rotate-psk", "--parallel", "0"],
        ["host", "rotate-key"],
        ["host", "rotate-key", "nas", "--timeout", "-1"],
    ],
)
def test_usage_errors_exit_2_and_change_nothing(
    runner: CliRunner, net: Path, args: list[str]
) -> None:
    before = snapshot(net)
    result = run(runner, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert snapshot(net) == before
