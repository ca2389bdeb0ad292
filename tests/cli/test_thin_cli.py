"""The CLI's entry point, `host set --agent` (what the hints tell users to run) and where `up` has
the agent store its spec: no root, no network."""

from __future__ import annotations

import importlib
import inspect
import json
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpcctl.admin import fanout, inventory
from vpcctl.admin.transport import Completed
from vpcctl.cli.agent import parser
from vpcctl.cli.commands import app
from vpcctl.core.errors import AgentError
from vpcctl.core.model import Host, SshTarget
from vpcctl.host.state import StateDir


def test_cli_main_is_the_entry_function_after_the_commands_are_imported() -> None:
    importlib.import_module("vpcctl.cli.commands")
    import vpcctl.cli

    assert inspect.isfunction(vpcctl.cli.main)
    assert vpcctl.cli.main.__module__ == "vpcctl.cli"


def test_host_set_agent_is_the_command_the_hints_name(runner: CliRunner, net: Path) -> None:
    done = Completed(127, "", "sh: 1: vpcctl: not found\n")
    host = inventory.load(net).hosts["vps1"]
    with pytest.raises(AgentError) as caught:
        fanout._json(host, done, "agent apply")
    hint = caught.value.hint or ""
    assert "`vpcctl host set vps1 --agent PATH`" in hint
    command = "sudo -n /opt/vpcctl/bin/vpcctl"
    res = runner.invoke(app, ["host", "set", "vps1", "--agent", command], prog_name="vpcctl")
    assert res.exit_code == 0, res.stdout + res.stderr
    after = inventory.load(net)
    assert after.hosts["vps1"].agent == command
    assert f'agent = "{command}"' in net.read_text()
    argv = fanout.agent_argv(after.hosts["vps1"], "agent", "status")
    assert argv == ["sudo", "-n", "/opt/vpcctl/bin/vpcctl", "agent", "status"]
    # --agent alone changes nothing else
    assert after.hosts["vps1"].endpoint == host.endpoint
    assert after.hosts["vps1"].public_key == host.public_key


def test_host_set_agent_refuses_an_empty_command(runner: CliRunner, net: Path) -> None:
    before = net.read_bytes()
    res = runner.invoke(app, ["host", "set", "vps1", "--agent", " "], prog_name="vpcctl")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        "error: --agent: empty or unprintable command",
        'hint: e.g. --agent "sudo -n vpcctl"',
    ]
    assert net.read_bytes() == before


@dataclass
class RecordingTransport:
    """Answers `agent apply` like an agent with nothing to change; records what it was asked."""

    target: str = "fake"
    calls: list[tuple[list[str], str | None]] = field(default_factory=list)

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append((list(argv), input))
        return Completed(0, json.dumps({"changed": False, "changes": []}), "")

    def put(self, path: str, data: bytes, *, timeout: float | None = None) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def test_up_has_the_agent_save_the_spec_in_its_own_state_directory(tmp_path: Path) -> None:
    t = RecordingTransport()
    host = Host(name="h1", ssh=SshTarget("192.0.2.1"), address=IPv4Address("10.90.0.1"))
    result = fanout.up_one(host, t, '{"spec": 1}')
    assert result.ok
    ((argv, given),) = t.calls
    assert argv[-1] == "--save" and "/etc/vpcctl/spec.json" not in argv
    assert given == '{"spec": 1}'
    assert argv[:3] == ["vpcctl", "agent", "apply"]
    args = parser().parse_args(argv[2:])  # what the agent parses: --save without a path
    assert args.save == ""
    state = StateDir(tmp_path / "state")
    state.save_spec(given, Path(args.save) if args.save else None)
    assert state.spec == tmp_path / "state" / "spec.json"
    assert state.spec.read_text() == given
    assert stat.S_IMODE(state.spec.stat().st_mode) == 0o600
    explicit = parser().parse_args(["apply", "-", "--save", str(tmp_path / "x.json")])
    assert explicit.save == str(tmp_path / "x.json")
