"""The admin side's fan-out (vpcctl.admin.fanout) over fake transports: per-host results, the
version refusal, the agent's error output parsed into error and hint, status and the matrix."""

from __future__ import annotations

import threading
import time

import pytest

from tests.builders import homelab
from tests.fake_transport import (
    Call,
    FakeHost,
    FakeNet,
    Reply,
    agent_error,
    agent_json,
    garbage,
    host_key_changed,
    not_installed,
    timeout,
    unreachable,
)
from vpcctl import __version__
from vpcctl.admin import fanout
from vpcctl.admin.fanout import HostResult
from vpcctl.admin.transport import Transport
from vpcctl.core.errors import AgentError
from vpcctl.core.model import Host, Inventory
from vpcctl.core.spec import from_json

OLD = "0.0.9"


@pytest.fixture
def inv() -> Inventory:
    return homelab()


def hosts(inv: Inventory) -> list[Host]:
    return fanout.select(inv, [])


def up_all(inv: Inventory, net: FakeNet, parallel: int = 16) -> dict[str, HostResult]:
    specs = fanout.specs_json(inv)
    results = fanout.for_each(
        hosts(inv), net.connect, lambda h, t: fanout.up_one(h, t, specs[h.name]), parallel=parallel
    )
    return {r.host: r for r in results}


# ---------------------------------------------------------------------------------------------
# for_each: one host's failure is its own


def test_every_host_gets_its_own_spec_and_all_transports_are_closed(inv: Inventory) -> None:
    net = FakeNet({"vps1": FakeHost(changes=["create vpc0", "add peer nas"])})
    results = up_all(inv, net)
    assert sorted(results) == ["nas", "vps1", "vps2"]
    assert all(r.ok for r in results.values())
    assert results["vps1"].changed and results["vps1"].changes == ["create vpc0", "add peer nas"]
    assert not results["nas"].changed and results["nas"].changes == []
    for name in results:
        (apply,) = net.calls(name, "agent apply")
        assert apply.input is not None and from_json(apply.input, "sent").host == name
        assert apply.option("--expect-version") == __version__
        assert apply.has("--json", "--save")  # the agent saves the spec in its state dir
        assert not apply.has("--dry-run")
    assert len(net.transports) == 3 and net.all_closed


def test_a_failing_host_does_not_stop_the_others(inv: Inventory) -> None:
    net = FakeNet(
        {
            "nas": FakeHost(refuse=unreachable("admin@nas.lan:2222")),
            "vps1": FakeHost(answers={"agent apply": timeout("root@203.0.113.10")}),
            "vps2": FakeHost(changes=["add route"]),
        }
    )
    results = up_all(inv, net)
    assert not results["nas"].ok and "cannot connect" in (results["nas"].error or "")
    assert results["nas"].hint == "is sshd running there, and the address right?"
    assert not results["vps1"].ok and "timed out" in (results["vps1"].error or "")
    assert results["vps1"].hint == "raise --timeout, or check the host"
    assert results["vps2"].ok and results["vps2"].changes == ["add route"]
    assert net.all_closed  # the transport of the host that timed out too
    assert all(r.seconds >= 0 for r in results.values())


def test_host_key_errors_are_per_host_results(inv: Inventory) -> None:
    net = FakeNet({"vps2": FakeHost(refuse=host_key_changed("root@198.51.100.20"))})
    results = up_all(inv, net)
    assert results["nas"].ok and results["vps1"].ok
    assert not results["vps2"].ok and "HOST KEY CHANGED" in (results["vps2"].error or "")
    assert net.calls("vps2") == []  # nothing was sent


def test_results_keep_host_order_and_hosts_run_in_parallel(inv: Inventory) -> None:
    """With parallel=3 all three hosts are inside work at once (a barrier that needs all three
    passes); with parallel=1 never two."""
    barrier = threading.Barrier(3, timeout=10)

    def work(h: Host, t: Transport) -> HostResult:
        barrier.wait()
        return HostResult(h.name, ok=True)

    results = fanout.for_each(hosts(inv), FakeNet().connect, work, parallel=3)
    assert [r.host for r in results] == ["nas", "vps1", "vps2"] and all(r.ok for r in results)

    inside = 0
    most = 0
    lock = threading.Lock()

    def serial(h: Host, t: Transport) -> HostResult:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        with lock:
            inside -= 1
        return HostResult(h.name, ok=True)

    fanout.for_each(hosts(inv), FakeNet().connect, serial, parallel=1)
    assert most == 1


def test_callbacks_see_every_host_start_and_finish(inv: Inventory) -> None:
    started: list[str] = []
    done: list[str] = []
    fanout.for_each(
        hosts(inv),
        FakeNet({"vps1": FakeHost(refuse=unreachable("x"))}).connect,
        lambda h, t: HostResult(h.name, ok=True),
        parallel=1,
        on_start=started.append,
        on_done=lambda r: done.append(f"{r.host}:{r.ok}"),
    )
    assert started == ["nas", "vps1", "vps2"]
    assert done == ["nas:True", "vps1:False", "vps2:True"]


def test_select_refuses_an_unknown_host_and_defaults_to_all(inv: Inventory) -> None:
    from vpcctl.core.errors import NotFoundError

    assert [h.name for h in fanout.select(inv, ["vps2", "nas"])] == ["vps2", "nas"]
    with pytest.raises(NotFoundError, match="no host named 'nope'"):
        fanout.select(inv, ["nas", "nope"])


# ---------------------------------------------------------------------------------------------
# the version refusal


def test_an_agent_of_another_version_refuses_and_changes_nothing(inv: Inventory) -> None:
    net = FakeNet({"vps1": FakeHost(version=OLD, changes=["would change"])})
    results = up_all(inv, net)
    r = results["vps1"]
    assert not r.ok and not r.changed and r.changes == []
    assert r.error == (
        f"vps1: agent apply failed: agent is vpcctl {OLD}, the admin runs vpcctl {__version__}; "
        "nothing changed"
    )
    assert r.hint is not None and f"install vpcctl {__version__}" in r.hint
    assert results["nas"].ok and results["vps2"].ok


def test_an_agent_too_old_for_expect_version_is_caught_by_the_version_check(
    inv: Inventory,
) -> None:
    usage = Reply(2, "", "usage: vpcctl agent apply [-h] SPEC\nerror: unrecognized arguments\n")
    net = FakeNet({"nas": FakeHost(version=OLD, answers={"agent apply": usage})})
    r = up_all(inv, net)["nas"]
    assert not r.ok
    assert r.error == f"nas: agent is vpcctl {OLD}, this is vpcctl {__version__}; nothing changed"
    assert r.hint == f"run `vpcctl host bootstrap nas` to install {__version__} there"
    assert [c.verb for c in net.calls("nas")] == ["agent apply", "--version"]


def test_check_version() -> None:
    inv = homelab()
    host = inv.hosts["vps1"]
    net = FakeNet()
    assert fanout.check_version(host, net.connect(host)) == __version__
    net["vps1"] = FakeHost(version=OLD)
    with pytest.raises(AgentError, match=f"agent is vpcctl {OLD}, this is vpcctl"):
        fanout.check_version(host, net.connect(host))
    net["vps1"] = FakeHost(answers={"--version": not_installed()})
    with pytest.raises(AgentError, match="vpcctl agent not found") as exc:
        fanout.check_version(host, net.connect(host))
    assert exc.value.hint is not None and "vpcctl host bootstrap vps1" in exc.value.hint
    net["vps1"] = FakeHost(answers={"--version": Reply(0, "", "")})
    with pytest.raises(AgentError, match="agent is vpcctl \\?"):
        fanout.check_version(host, net.connect(host))


def test_a_custom_agent_command_prefixes_every_call() -> None:
    from dataclasses import replace

    inv = homelab()
    host = replace(inv.hosts["nas"], agent="/opt/vpcctl/bin/vpcctl --quiet")
    net = FakeNet()
    fanout.check_version(host, net.connect(host))
    assert net.calls("nas")[0].argv == ("/opt/vpcctl/bin/vpcctl", "--quiet", "--version")


# ---------------------------------------------------------------------------------------------
# what the agent printed, parsed into one error and its hint


def apply_error(reply: Reply, version: str = __version__) -> AgentError:
    inv = homelab()
    host = inv.hosts["vps2"]
    net = FakeNet({"vps2": FakeHost(version=version, answers={"agent apply": reply})})
    with pytest.raises(AgentError) as exc:
        fanout.up_one(host, net.connect(host), fanout.specs_json(inv)["vps2"])
    return exc.value


def test_the_agents_error_and_hint_lines_are_taken_over() -> None:
    reply = agent_error("cannot create vpc0: Operation not permitted", "run the agent as root")
    e = apply_error(Reply(1, "", "progress: creating vpc0\n" + reply.stderr))
    assert e.message == "vps2: agent apply failed: cannot create vpc0: Operation not permitted"
    assert e.hint == "run the agent as root"


def test_without_an_error_line_the_last_stderr_line_is_the_message() -> None:
    e = apply_error(Reply(1, "", "Traceback (most recent call last):\nOSError: disk full\n\n"))
    assert e.message == "vps2: agent apply failed: OSError: disk full" and e.hint is None
    e = apply_error(Reply(1, "", ""))
    assert e.message == "vps2: agent apply failed: exit 1"


def test_a_missing_agent_says_how_to_install_it() -> None:
    for reply in (not_installed(), Reply(1, "", "bash: vpcctl: command not found\n")):
        e = apply_error(reply)
        assert e.message == "vps2: vpcctl is not installed there ('vpcctl' not found)"
        assert e.hint is not None and "vpcctl host bootstrap vps2" in e.hint


def test_output_that_is_not_json_is_an_error() -> None:
    e = apply_error(garbage())  # rc 0 but no JSON: said as such, never as "exit 2"
    assert e.message.startswith("vps2: agent apply printed no JSON: ")
    assert "exit 2" not in e.message
    e = apply_error(Reply(0, "{ truncated", ""))
    assert e.message == "vps2: agent apply printed no JSON: '{ truncated'"
    assert e.hint is not None and "agent command" in e.hint


def test_a_failure_of_an_agent_of_another_version_reports_the_version() -> None:
    e = apply_error(garbage(rc=3), version=OLD)
    assert (
        e.message == f"vps2: agent is vpcctl {OLD}, this is vpcctl {__version__}; nothing changed"
    )


def test_plan_is_the_agents_dry_run() -> None:
    inv = homelab()
    host = inv.hosts["nas"]
    net = FakeNet({"nas": FakeHost(changes=["create vpc0"])})
    r = fanout.plan_one(host, net.connect(host), fanout.specs_json(inv)["nas"])
    assert r.ok and r.changed and r.changes == ["create vpc0"]
    (call,) = net.calls("nas", "agent apply")
    assert call.has("--dry-run") and not call.has("--save")
    up_to_date = fanout.plan_one(host, FakeNet().connect(host), fanout.specs_json(inv)["nas"])
    assert up_to_date.ok and not up_to_date.changed


# ---------------------------------------------------------------------------------------------
# status, the matrix and join's check


def test_status_reports_handshake_ages_and_the_matrix(inv: Inventory) -> None:
    now = time.time()
    key = {n: h.public_key for n, h in inv.hosts.items()}
    net = FakeNet(
        {
            "nas": FakeHost(
                peers=[
                    {"name": "vps1", "public_key": key["vps1"], "latest_handshake": now - 30},
                    {"name": None, "public_key": key["vps2"], "latest_handshake": now - 600},
                ]
            ),
            "vps1": FakeHost(peers=[{"name": "vps2", "latest_handshake": None}]),
            "vps2": FakeHost(refuse=unreachable("root@198.51.100.20")),
        }
    )
    results = fanout.for_each(hosts(inv), net.connect, fanout.status_one)
    by = {r.host: r for r in results}
    nas = by["nas"].data
    assert nas["reachable"] and nas["version"] == __version__
    fresh, stale = nas["peers"]
    assert fresh["fresh"] and 29 <= fresh["handshake_age"] <= 60
    assert not stale["fresh"] and stale["handshake_age"] >= 600
    assert by["vps1"].data["peers"][0] == {
        "name": "vps2", "public_key": None, "endpoint": None, "handshake_age": None,
        "fresh": False, "rx_bytes": None, "tx_bytes": None,
    }  # fmt: skip
    assert not by["vps2"].ok
    mx = fanout.matrix(results, inv)
    assert mx == {
        "nas": {"vps1": True, "vps2": False},
        "vps1": {"nas": True, "vps2": False},
        "vps2": {"nas": False, "vps1": False},
    }


def test_check_one_returns_the_hosts_key() -> None:
    inv = homelab()
    host = inv.hosts["vps1"]
    net = FakeNet({"vps1": FakeHost(public_key="a" * 43 + "=", key_created=False)})
    r = fanout.check_one(host, net.connect(host))
    assert r.ok and not r.changed and r.data["public_key"] == "a" * 43 + "="
    assert r.data["check"]["wireguard"] == "kernel"
    assert [c.verb for c in net.calls("vps1")] == ["--version", "agent check", "agent keygen"]


def test_check_one_stops_at_a_failed_check_before_keygen() -> None:
    inv = homelab()
    host = inv.hosts["vps1"]
    problem = {"message": "nft not found", "hint": "apt-get install nftables"}
    net = FakeNet({"vps1": FakeHost(problems=[problem])})
    with pytest.raises(AgentError, match="vps1: agent check failed"):
        fanout.check_one(host, net.connect(host))
    assert "agent keygen" not in [c.verb for c in net.calls("vps1")]


def test_a_scripted_sequence_answers_call_by_call() -> None:
    inv = homelab()
    host = inv.hosts["nas"]
    net = FakeNet({"nas": FakeHost(answers={"agent status": [agent_json({"peers": []}),
                                                            agent_error("boom")]})})  # fmt: skip
    t = net.connect(host)
    first, second, third = (t.run(["vpcctl", "agent", "status", "--json"]) for _ in range(3))
    assert first.rc == 0 and second.rc == 1 and third.rc == 1
    seen: list[Call] = []

    def answer(call: Call) -> Reply:
        seen.append(call)
        return Reply(0, "{}")

    net["nas"] = FakeHost(answers={"agent status": answer})
    net.connect(host).run(["vpcctl", "agent", "status"], timeout=5)
    assert seen[0].timeout == 5 and seen[0].host == "nas"
