"""The SSH commands (`up`, `sync`, `plan`, `status`, `join`) through the real typer app, with
fake transports passed in as the root State's ``connect``: exit codes (4 for a partial failure),
the per-host table, the version refusal and ``--json`` output, without root or sshd."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from tests.builders import public_key
from tests.fake_transport import (
    FakeHost,
    FakeNet,
    Reply,
    agent_error,
    agent_json,
    host_key_unknown,
    timeout,
    unreachable,
)
from vpcctl import __version__
from vpcctl.admin import inventory
from vpcctl.cli.app import State
from vpcctl.cli.commands import app
from vpcctl.core.model import PortSpec

OLD = "0.0.9"


def run(runner: CliRunner, net: FakeNet, *args: str) -> Result:
    return runner.invoke(app, list(args), prog_name="vpcctl", obj=State(connect=net.connect))


def rows(result: Result) -> dict[str, str]:
    """The summary table's rows by host name (first column)."""
    out: dict[str, str] = {}
    for line in result.stdout.splitlines()[1:]:
        name, _, rest = line.strip().partition(" ")
        out[name] = rest.strip()
    return out


def test_up_converges_every_host_and_prints_what_changed(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"vps1": FakeHost(changes=["create vpc0", "add peer nas"])})
    result = run(runner, fakes, "up")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[0].split() == ["HOST", "RESULT", "CHANGES", "SECONDS",
                                                     "DETAIL"]  # fmt: skip
    table = rows(result)
    assert table["vps1"].split()[:2] == ["ok", "2"] and "create vpc0; add peer nas" in table["vps1"]
    assert table["nas"].split()[:2] == ["ok", "0"] and "up to date" in table["nas"]
    assert sorted(table) == ["nas", "vps1", "vps2"]
    assert fakes.all_closed


def test_up_prints_nothing_when_nothing_changed(runner: CliRunner, net: Path) -> None:
    """Not on a terminal (cron): silence when all is well and nothing changed."""
    for command in ("up", "sync"):
        result = run(runner, FakeNet(), command)
        assert result.exit_code == 0 and result.stdout == "" and result.stderr == "", command


def test_a_partial_failure_exits_4_with_the_per_host_table(runner: CliRunner, net: Path) -> None:
    before = net.read_bytes()
    fakes = FakeNet(
        {
            "nas": FakeHost(refuse=unreachable("admin@nas.lan:2222")),
            "vps1": FakeHost(answers={"agent apply": timeout("root@203.0.113.10")}),
            "vps2": FakeHost(changes=["add route 10.100.1.0/24"]),
        }
    )
    for command in ("up", "sync"):
        result = run(runner, fakes, command)
        assert result.exit_code == 4, (command, result.stdout, result.stderr)
        table = rows(result)
        assert table["nas"].startswith("FAILED") and "cannot connect" in table["nas"]
        assert "(hint: is sshd running there, and the address right?)" in table["nas"]
        assert table["vps1"].startswith("FAILED") and "timed out" in table["vps1"]
        assert table["vps2"].startswith("ok") and "add route 10.100.1.0/24" in table["vps2"]
    assert net.read_bytes() == before  # up never writes the inventory


def test_when_every_host_fails_up_exits_1(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({n: FakeHost(refuse=unreachable(n)) for n in ("nas", "vps1", "vps2")})
    result = run(runner, fakes, "up")
    assert result.exit_code == 1
    assert all(v.startswith("FAILED") for v in rows(result).values())


def test_up_json_has_one_record_per_host(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"nas": FakeHost(changes=["create vpc0"]), "vps2": FakeHost(version=OLD)})
    result = run(runner, fakes, "up", "--json")
    assert result.exit_code == 4, result.stderr
    data = json.loads(result.stdout)
    assert [d["host"] for d in data] == ["nas", "vps1", "vps2"]
    nas, vps1, vps2 = data
    assert set(nas) == {"host", "ok", "changed", "changes", "error", "hint", "seconds"}
    assert nas["ok"] and nas["changed"] and nas["changes"] == ["create vpc0"]
    assert nas["error"] is None and isinstance(nas["seconds"], float)
    assert vps1["ok"] and not vps1["changed"]
    assert not vps2["ok"] and not vps2["changed"]
    assert vps2["error"] == (
        f"vps2: agent apply failed: agent is vpcctl {OLD}, the admin runs vpcctl {__version__}; "
        "nothing changed"
    )
    assert f"install vpcctl {__version__}" in vps2["hint"]


def test_up_on_named_hosts_only_and_an_unknown_name_is_a_user_error(
    runner: CliRunner, net: Path
) -> None:
    fakes = FakeNet()
    result = run(runner, fakes, "up", "vps2", "--json")
    assert result.exit_code == 0 and [d["host"] for d in json.loads(result.stdout)] == ["vps2"]
    assert sorted(fakes.hosts) == ["vps2"]
    result = run(runner, fakes, "up", "nope")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no host named 'nope'",
        "hint: see `vpcctl host ls`",
    ]


def test_the_agents_error_and_hint_reach_the_table(runner: CliRunner, net: Path) -> None:
    failing = agent_error("cannot create vpc0: Operation not permitted", "run the agent as root")
    fakes = FakeNet({"vps1": FakeHost(answers={"agent apply": failing})})
    result = run(runner, fakes, "up")
    assert result.exit_code == 4
    assert rows(result)["vps1"].endswith(
        "vps1: agent apply failed: cannot create vpc0: Operation not permitted "
        "(hint: run the agent as root)"
    )


def test_plan_lists_the_changes_and_exit_code_3(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"vps2": FakeHost(changes=["create vpc0", "load nft table"])})
    result = run(runner, fakes, "plan")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "nas: up to date", "vps1: up to date", "vps2: 2 changes", "  create vpc0",
        "  load nft table",
    ]  # fmt: skip
    assert all(c.has("--dry-run") for n in fakes.hosts for c in fakes.calls(n, "agent apply"))
    assert run(runner, fakes, "plan", "--exit-code").exit_code == 3
    assert run(runner, FakeNet(), "plan", "--exit-code").exit_code == 0


def test_plan_partial_failure_and_json(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet({"nas": FakeHost(version=OLD), "vps1": FakeHost(changes=["x"])})
    result = run(runner, fakes, "plan")
    assert result.exit_code == 4
    assert result.stdout.splitlines()[0].startswith("nas: FAILED: nas: agent apply failed: agent")
    data = json.loads(run(runner, fakes, "plan", "--json").stdout)
    assert [(d["host"], d["ok"], d["changes"]) for d in data] == [
        ("nas", False, []), ("vps1", True, ["x"]), ("vps2", True, []),
    ]  # fmt: skip


def test_status_json_has_hosts_and_the_matrix(runner: CliRunner, net: Path) -> None:
    now = time.time()
    fakes = FakeNet(
        {
            "nas": FakeHost(peers=[{"name": "vps1", "latest_handshake": now - 5}]),
            "vps2": FakeHost(refuse=unreachable("root@198.51.100.20")),
        }
    )
    result = run(runner, fakes, "status", "--json")
    assert result.exit_code == 4, result.stderr
    data = json.loads(result.stdout)
    assert [h["host"] for h in data["hosts"]] == ["nas", "vps1", "vps2"]
    assert data["hosts"][0]["version"] == __version__ and data["hosts"][0]["reachable"]
    assert data["matrix"]["nas"] == {"vps1": True, "vps2": False}
    assert data["matrix"]["vps1"]["nas"] is True
    result = run(runner, fakes, "status")
    assert result.exit_code == 4
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["HOST", "REACHABLE", "VERSION", "PEERS", "FRESH", "DETAIL"]
    assert lines[1].split()[:4] == ["nas", "yes", __version__, "1/1"]
    assert lines[3].split()[:2] == ["vps2", "no"] and "cannot connect" in lines[3]
    assert "mesh (+ fresh handshake, . none):" in lines
    assert lines[-3:] == [
        "   nas      -      +      .",
        "  vps1      +      -      .",
        "  vps2      .      .      -",
    ]


def test_join_records_the_hosts_public_key(runner: CliRunner, net: Path) -> None:
    key = public_key("edge")
    fakes = FakeNet({"edge": FakeHost(public_key=key)})
    result = run(runner, fakes, "join", "edge", "--ssh", "root@192.0.2.7",
                 "--endpoint", "192.0.2.7:51820", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["host"] == "edge" and out["public_key"] == key and out["new_key"] is True
    assert out["wireguard"] == "kernel"
    edge = inventory.load(net).hosts["edge"]
    assert edge.public_key == key and str(edge.address) == out["address"]
    assert [c.verb for c in fakes.calls("edge")] == ["--version", "agent check", "agent keygen"]
    assert fakes.all_closed
    again = run(runner, FakeNet({"edge": FakeHost(public_key=key, key_created=False)}),
                "join", "edge", "--ssh", "root@192.0.2.7")  # fmt: skip
    assert again.exit_code == 0 and "re-joined edge" in again.stderr


def test_join_refused_by_version_or_host_key_leaves_the_inventory(
    runner: CliRunner, net: Path
) -> None:
    before = net.read_bytes()
    cases = {
        "agent is vpcctl 0.0.9": FakeHost(version=OLD),
        "unknown SSH host key": FakeHost(refuse=host_key_unknown("root@192.0.2.7")),
    }
    for says, host in cases.items():
        result = run(runner, FakeNet({"edge": host}), "join", "edge", "--ssh", "root@192.0.2.7")
        assert result.exit_code == 1, result.stdout
        assert result.stdout == ""
        error, hint = result.stderr.splitlines()
        assert error.startswith("error: ") and says in error
        assert hint.startswith("hint: ")
    assert net.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# container ls / service ls --live: each host's `agent table --json`


def _table(*records: tuple[str, str, str, dict[str, str], bool]) -> Reply:
    return agent_json(
        {
            "daemon": True,
            "endpoints": [
                {"host": h, "vpc": "prod", "name": n, "address": a, "labels": lb, "ready": r}
                for h, n, a, lb, r in records
            ],
        }
    )


def test_ls_live_shows_discovered_containers_and_live_backends(
    runner: CliRunner, net: Path
) -> None:
    from vpcctl.admin import edits

    inventory.update(
        net,
        lambda inv: edits.add_service(
            inv, "pg", "prod", (PortSpec(5432),), (), selector=(("app", "db"),)
        ),
    )
    pg = ("vps2", "pg-a", "10.100.2.130", {"app": "db"}, True)
    sick = ("vps1", "pg-b", "10.100.1.130", {"app": "db"}, False)
    fakes = FakeNet(
        {
            "nas": FakeHost(answers={"agent table": _table(pg, sick)}),
            "vps1": FakeHost(answers={"agent table": _table(sick)}),
            "vps2": FakeHost(refuse=unreachable("root@198.51.100.20")),
        }
    )
    result = run(runner, fakes, "container", "ls", "--live", "--vpc", "prod")
    assert result.exit_code == 4, (result.stdout, result.stderr)  # vps2 could not be asked
    assert "warning: vps2 could not be asked: root@198.51.100.20: cannot connect" in result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["VPC", "NAME", "HOST", "IP", "SOURCE", "RUNNING", "READY", "NOTE"]
    assert ["prod", "pg-a", "vps2", "10.100.2.130", "discovered", "yes", "yes", "-"] in lines
    assert ["prod", "pg-b", "vps1", "10.100.1.130", "discovered", "yes", "no", "-"] in lines
    assert ["prod", "db-1", "vps1", "10.100.1.2", "declared", "no", "-", "-"] in lines
    assert fakes.all_closed
    result = run(runner, fakes, "service", "ls", "--live", "--vpc", "prod", "--json")
    assert result.exit_code == 4
    by_name = {s["name"]: s for s in json.loads(result.stdout)}
    assert by_name["pg"]["live_backends"] == [
        {"address": "10.100.2.130", "name": "pg-a", "host": "vps2"}
    ]
    assert [b["name"] for b in by_name["db"]["live_backends"]] == ["db-1", "db-2"]
    # every host answers: exit 0, and asking one host is enough for the whole mesh
    fakes["vps2"] = FakeHost(answers={"agent table": _table(pg)})
    before = {n: len(h.calls) for n, h in fakes.hosts.items()}
    result = run(runner, fakes, "service", "ls", "--live", "--via", "nas")
    assert result.exit_code == 0, result.stderr
    assert "pg-a@10.100.2.130" in result.stdout and "LIVE BACKENDS" in result.stdout
    after = {n: len(h.calls) for n, h in fakes.hosts.items()}
    assert {n: after[n] - before[n] for n in after} == {"nas": 1, "vps1": 0, "vps2": 0}


def test_ls_live_says_when_a_host_runs_no_daemon(runner: CliRunner, net: Path) -> None:
    fakes = FakeNet(
        {n: FakeHost(answers={"agent table": agent_json({"daemon": False, "endpoints": []})})
         for n in ("nas", "vps1", "vps2")}
    )  # fmt: skip
    result = run(runner, fakes, "container", "ls", "--live")
    assert result.exit_code == 0
    assert result.stderr.count("no agent daemon runs there") == 3
