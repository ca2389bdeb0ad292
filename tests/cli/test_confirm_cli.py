"""`vpcctl up --confirm SECONDS` through the real typer app over fake transports: the table,
--json, exit codes, and the validation of SECONDS (nothing is sent on bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli.test_push import rows, run
from tests.fake_transport import FakeHost, FakeNet, agent_json


def test_up_confirm_confirms_each_changed_host(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"vps1": FakeHost(changes=["create vb-prod"])})
    result = run(runner, fakes, "up", "--confirm", "60")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[0].split() == ["HOST", "APPLY", "CHANGES", "CONFIRM",
                                                     "DETAIL"]  # fmt: skip
    table = rows(result)
    assert table["vps1"].split()[:3] == ["ok", "1", "confirmed"]
    assert table["nas"].split()[:3] == ["ok", "0", "unchanged"]
    token = fakes.calls("vps1", "agent apply")[0].option("--token")
    assert token and fakes.calls("vps1", "agent confirm")[0].option("--token") == token
    assert fakes.all_closed


def test_up_confirm_json_and_exit_4_when_a_host_says_too_late(runner: CliRunner, net: Path) -> None:
    late = agent_json({"confirmed": False, "outcome": "too late", "token": None,
                       "message": "too late: the revert was due at 12:00:00; it goes ahead"},
                      rc=1)  # fmt: skip
    fakes = FakeNet({"vps1": FakeHost(changes=["create vb-prod"], answers={"agent confirm": late})})
    result = run(runner, fakes, "up", "--confirm", "60", "--json")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    by = {r["host"]: r for r in json.loads(result.stdout)}
    c = by["vps1"]["confirm"]
    assert c["state"] == "not confirmed" and c["revert_at_text"].count(":") == 2
    assert "too late" in c["error"]
    assert by["vps1"]["revert"]["seconds"] == 60.0
    assert by["nas"]["confirm"]["state"] == "unchanged"


@pytest.mark.parametrize("bad", ["5", "0", "-1", "3601", "nan", "inf", "soon", ""])
def test_bad_seconds_are_one_error_and_nothing_is_sent(
    runner: CliRunner, net: Path, bad: str
) -> None:
    fakes = FakeNet()
    before = net.read_bytes()
    result = run(runner, fakes, "up", "--confirm", bad)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: --confirm")
    assert lines[1].startswith("hint: ")
    assert fakes.transports == [] and net.read_bytes() == before


def test_more_hosts_than_parallel_is_refused(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet()
    result = run(runner, fakes, "up", "--confirm", "60", "--parallel", "1")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--parallel" in result.stderr and "hint: raise --parallel to 3" in result.stderr
    assert fakes.transports == []


def test_help_shows_the_option_and_an_example(runner: CliRunner) -> None:
    from vpcctl.cli.commands import app

    result = runner.invoke(app, ["up", "--help"], prog_name="vpcctl")
    assert "--confirm" in result.stdout and "vpcctl up --confirm 60" in result.stdout
