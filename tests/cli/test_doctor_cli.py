"""`vpcctl doctor` through the real typer app with fake hosts: exit 0 / 1 / 4, text and --json."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from tests.fake_transport import FakeHost, FakeNet, agent_json, unreachable
from vpcctl import __version__
from vpcctl.cli.app import State
from vpcctl.cli.commands import app


def facts(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "version": __version__, "time": time.time(), "applied": True, "routing": "ipip",
        "wireguard": {"kernel": True}, "ipip": True, "nft": {"present": True, "usable": True},
        "forwarding": True, "resolver": True, "daemon": {"enabled": False}, "mtu": 1420,
        "peers": [], "docker": {"present": False},
    }  # fmt: skip
    return f | over


def run(runner: CliRunner, net: FakeNet, *args: str) -> Result:
    return runner.invoke(app, ["doctor", *args], prog_name="vpcctl", obj=State(connect=net.connect))


def healthy() -> FakeHost:
    return FakeHost(answers={"agent doctor": agent_json(facts())})


def test_all_pass_exits_0(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({n: healthy() for n in ("nas", "vps1", "vps2")})
    result = run(runner, fakes)
    assert result.exit_code == 0, result.stdout
    assert result.stdout.count("all checks pass") == 3


def test_a_failing_check_exits_1_with_its_fix(runner: CliRunner, net: Path) -> None:
    sick = FakeHost(answers={"agent doctor": agent_json(facts(forwarding=False), rc=1)})
    fakes = FakeNet({"nas": sick, "vps1": healthy(), "vps2": healthy()})
    result = run(runner, fakes, "--json")
    assert result.exit_code == 1, result.stdout
    data = {r["host"]: r for r in json.loads(result.stdout)}
    bad = [c for c in data["nas"]["checks"] if c["status"] == "fail"]
    assert [(c["name"], c["fix"]) for c in bad] == [
        ("ip_forward", "sysctl -w net.ipv4.ip_forward=1")
    ]
    assert not any(c["status"] == "fail" for c in data["vps1"]["checks"])


def test_an_unreachable_host_exits_4(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"nas": FakeHost(refuse=unreachable("root@nas")), "vps1": healthy(),
                     "vps2": healthy()})  # fmt: skip
    result = run(runner, fakes, "nas", "vps1")
    assert result.exit_code == 4, result.stdout
    assert "nas: UNREACHABLE" in result.stdout and "vps1: all checks pass" in result.stdout


def test_bad_stale_is_refused(runner: CliRunner, net: Path) -> None:
    result = run(runner, FakeNet({}), "--stale", "nan")
    assert result.exit_code == 2 and "error: --stale" in result.stderr
