"""Hosts that misbehave are untrusted input (issue 10, item 7), through the real typer app with
fake transports: an agent's answer of the wrong shape, garbage, megabytes, an exception, or
none at all, is that host's failure in the per-host table (exit 4), never a traceback; every
remote command of up, sync, plan and status is bounded by the transport's --timeout (none is
fixed); the first Ctrl-C says what is known of each host and exits 130."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.fake_transport import Call, FakeHost, FakeNet, Reply, agent_json, garbage
from vpcctl.admin import fanout
from vpcctl.admin.fanout import Interrupted
from vpcctl.cli.app import State
from vpcctl.cli.commands import app
from vpcctl.core.model import Host


def run(runner: CliRunner, net: FakeNet, *args: str) -> Result:
    return runner.invoke(app, list(args), prog_name="vpcctl", obj=State(connect=net.connect))


def apply_json(**override: Any) -> Reply:
    data: dict[str, Any] = {"host": "vps2", "changed": True, "dry_run": False,
                            "up_to_date": False, "changes": [{"op": "X", "text": "x"}],
                            "applied": 1, "seconds": 0.1}  # fmt: skip
    data.update(override)
    return agent_json(data)


WRONG_APPLY = {
    "a list": agent_json([]),
    "a string": agent_json("ok"),
    "null": agent_json(None),
    "changes a string": apply_json(changes="all of them"),
    "changes of numbers": apply_json(changes=[1, 2]),
    "a change text a list": apply_json(changes=[{"text": ["x"]}]),
    "changed a string": apply_json(changed="yes"),
    "garbage": garbage("\x00\x1b[31mgarbage\xff" * 1000),
    "truncated JSON": Reply(0, '{"host": "vps2", "changes": [', ""),
    "deeply nested": Reply(0, "[" * 100_000 + "]" * 100_000, ""),
    "3 MB of stdout": Reply(0, "x" * (3 << 20), ""),
    "3 MB of stderr": Reply(1, "", "noise\n" * (1 << 19)),
    "nothing": Reply(0, "", ""),
}
WRONG_STATUS = {
    "a list": agent_json([]),
    "peers an object": agent_json({"peers": {"a": 1}}),
    "a peer a string": agent_json({"peers": ["nas"]}),
    "a handshake a string": agent_json({"peers": [{"name": "nas", "latest_handshake": "now"}]}),
    "applied a number": agent_json({"applied": 3, "peers": []}),
    "garbage": garbage(),
}


def _assert_host_failed(result: Result, host: str, *, ok_hosts: tuple[str, ...]) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 4, (result.exit_code, result.stdout, result.stderr)
    data = json.loads(result.stdout)
    records = data["hosts"] if isinstance(data, dict) else data
    by = {r["host"]: r for r in records}
    assert not by[host]["ok"] and by[host]["error"].startswith(f"{host}: ")
    assert len(by[host]["error"]) < 400  # a short sample, not the megabytes
    assert all(by[h]["ok"] for h in ok_hosts)
    return str(by[host]["error"])


@pytest.mark.parametrize("case", sorted(WRONG_APPLY))
def test_a_wrong_answer_to_apply_is_that_hosts_failure(
    runner: CliRunner, net: Path, case: str
) -> None:
    # plan reads only the changes of the answer
    for command in ("up", "sync") if case == "changed a string" else ("up", "plan", "sync"):
        fakes = FakeNet({"vps2": FakeHost(answers={"agent apply": WRONG_APPLY[case]})})
        result = run(runner, fakes, command, "--json")
        error = _assert_host_failed(result, "vps2", ok_hosts=("nas", "vps1"))
        if case not in ("3 MB of stderr",):
            assert "exit 2" not in error, error
        assert fakes.all_closed


def test_the_table_shows_a_wrong_shape_without_json_too(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"vps2": FakeHost(answers={"agent apply": agent_json([])})})
    result = run(runner, fakes, "up")
    assert result.exit_code == 4 and "Traceback" not in result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("vps2"))
    assert "FAILED" in row and "wrong shape" in row and "a list, not an object" in row


@pytest.mark.parametrize("case", sorted(WRONG_STATUS))
def test_a_wrong_answer_to_status_is_that_hosts_failure(
    runner: CliRunner, net: Path, case: str
) -> None:
    fakes = FakeNet({"vps1": FakeHost(answers={"agent status": WRONG_STATUS[case]})})
    result = run(runner, fakes, "status", "--json")
    _assert_host_failed(result, "vps1", ok_hosts=("nas", "vps2"))


def test_an_exception_from_a_transport_is_that_hosts_failure(runner: CliRunner, net: Path) -> None:
    def explode(call: Call) -> Reply:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    fakes = FakeNet({"nas": FakeHost(answers={"agent apply": explode})})
    result = run(runner, fakes, "up", "--json")
    error = _assert_host_failed(result, "nas", ok_hosts=("vps1", "vps2"))
    assert "unexpected answer" in error


def test_no_remote_command_has_a_fixed_timeout(runner: CliRunner, net: Path) -> None:
    """Every command of up, plan and status leaves the limit to the transport, which SSH sets
    from --timeout (it was a fixed 300 s for the apply, 30 s for the version check)."""
    fakes = FakeNet()
    for command in ("up", "plan", "status"):
        assert run(runner, fakes, command, "--timeout", "7").exit_code == 0
    calls = [c for name in fakes.hosts for c in fakes.calls(name)]
    assert {c.verb for c in calls} >= {"agent apply", "--version", "agent status"}
    assert all(c.timeout is None for c in calls), {(c.verb, c.timeout) for c in calls}


def test_the_ssh_connector_takes_timeout_from_the_option() -> None:
    from vpcctl.admin.ssh import remote_command

    line = remote_command(["vpcctl", "agent", "apply", "-"], 7)
    assert line.startswith("timeout -k 10 9 sh -c ") and line.endswith(" sh vpcctl agent apply -")


# Ctrl-C ---------------------------------------------------------------------------------------


def test_the_first_ctrl_c_stops_waiting_and_says_what_is_known() -> None:
    """One host done, one hanging in its apply, one never started (parallel 1): Ctrl-C (here a
    KeyboardInterrupt in the waiting thread) returns at once with each host's state, and the
    hanging host's transport is closed (which ends the remote command)."""
    from tests.builders import homelab

    inv = homelab()
    release = threading.Event()
    hanging = threading.Event()

    def hang(call: Call) -> Reply:
        hanging.set()
        release.wait(30)
        return agent_json({"changes": []})

    fakes = FakeNet({"nas": FakeHost(), "vps1": FakeHost(answers={"agent apply": hang})})
    specs = fanout.specs_json(inv)
    hosts: list[Host] = [inv.hosts["nas"], inv.hosts["vps1"], inv.hosts["vps2"]]
    order = iter(["nas", "vps1"])
    started: list[str] = []

    def on_start(name: str) -> None:
        started.append(name)

    def interrupt() -> None:
        hanging.wait(10)
        time.sleep(0.1)
        import _thread

        _thread.interrupt_main()

    def work(h: Host, t: Any) -> fanout.HostResult:
        if h.name == "vps1":
            assert next(order, None) is not None
        return fanout.up_one(h, t, specs[h.name])

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(Interrupted) as info:
        fanout.for_each(hosts, fakes.connect, work, parallel=1, on_start=on_start)
    assert time.monotonic() - t0 < 5
    release.set()
    e = info.value
    assert e.exit_code == 130
    assert [r.host for r in e.results] == ["nas"] and e.results[0].ok
    assert e.running == ["vps1"] and e.waiting == ["vps2"]
    assert "nas ok" in e.message and "vps1 unknown" in e.message
    assert "vps2 not started" in e.message
    vps1 = [t for t in fakes.transports if t.name == "vps1"]
    assert vps1 and all(t.closed for t in vps1)
