"""Confirmed apply's pure parts (vpcctl/core/confirm.py) and the admin side's round over fake
transports with a fake clock (vpcctl/admin/confirm.py): who is confirmed, who reverts."""

from __future__ import annotations

import math

import pytest

from tests.fake_transport import FakeHost, FakeNet, agent_json, timeout, unreachable
from vpcctl.admin.confirm import Clock, confirmed_up, exit_code
from vpcctl.core import confirm as cc
from vpcctl.core.errors import UsageError
from vpcctl.core.model import Host, SshTarget


@pytest.mark.parametrize("raw", ["10", "10.0", "60", "3600", "1e3"])
def test_a_window_from_10_to_3600_seconds_is_taken(raw: str) -> None:
    assert cc.parse_seconds(raw, "--confirm") == float(raw)


@pytest.mark.parametrize("raw", ["9.99", "0", "-5", "3601", "nan", "inf", "-inf", "", "1m", "ten"])
def test_anything_else_is_one_usage_error_with_a_hint(raw: str) -> None:
    with pytest.raises(UsageError) as exc:
        cc.parse_seconds(raw, "--confirm")
    assert "--confirm" in exc.value.message and "10" in exc.value.message
    assert exc.value.hint and "--confirm 60" in exc.value.hint


def test_the_test_only_override_lowers_the_minimum_and_is_itself_validated() -> None:
    assert cc.min_seconds({}) == cc.MIN_SECONDS
    assert cc.min_seconds({cc.MIN_ENV: "2"}) == 2.0
    assert cc.parse_seconds("2", "--confirm", cc.min_seconds({cc.MIN_ENV: "2"})) == 2.0
    for bad in ("0.5", "nan", "11", "x"):
        with pytest.raises(UsageError):
            cc.min_seconds({cc.MIN_ENV: bad})


def test_tokens_are_hex() -> None:
    assert cc.parse_token("3f2a9c1e") == "3f2a9c1e"
    for bad in ("", "3F2A9C1E", "short", "x" * 8, "0" * 65, "3f2a9c1e; rm -rf /"):
        with pytest.raises(UsageError):
            cc.parse_token(bad)


def test_the_pending_record_round_trips_and_garbage_is_no_record() -> None:
    p = cc.Pending("3f2a9c1e", 60.0, 1000.5, '{"version": 1}\n', None, "/etc/vpcctl/spec.json")
    assert cc.Pending.from_text(p.to_text()) == p
    first = cc.Pending("3f2a9c1e", 60.0, 1000.5, None)
    assert cc.Pending.from_text(first.to_text()) == first
    assert "first apply" in first.describe(990.0)["reverts_to"]
    assert first.describe(990.0)["seconds_left"] == 10.5
    assert first.describe(2000.0)["seconds_left"] == 0.0
    for junk in ("", "{", "[]", "null", '{"token": "3f2a9c1e"}', p.to_text().replace("3f2a", "ZZ"),
                 '{"token": "3f2a9c1e", "seconds": 1, "deadline": "inf", "previous": null}',
                 '{"token": "3f2a9c1e", "seconds": 1, "deadline": 1, "previous": 5}'):  # fmt: skip
        assert cc.Pending.from_text(junk) is None, junk


def test_outcomes() -> None:
    assert cc.outcome(True, True, True, False, "12:00:00") == "confirmed"
    assert cc.outcome(True, False, False, False, None) == "unchanged"
    assert cc.outcome(False, False, False, False, None) == "failed"
    assert (
        cc.outcome(True, True, False, False, "12:00:00")
        == "not confirmed (will revert at 12:00:00)"
    )
    assert cc.outcome(True, True, False, True, "12:00:00") == "not confirmed (reverted at 12:00:00)"
    assert cc.outcome(False, None, False, False, None) == "not confirmed"
    assert cc.outcome(False, None, True, False, None) == "confirmed"  # its answer was lost


# the admin's round, with a fake clock -----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s >= 0 and math.isfinite(s)
        self.slept.append(s)
        self.t += s


def hosts(*names: str) -> list[Host]:
    return [Host(name=n, ssh=SshTarget(host=f"{n}.lan", user="root"), address=None)  # type: ignore[arg-type]
            for n in names]  # fmt: skip


def run(net: FakeNet, *names: str, seconds: float = 30) -> tuple[list, FakeClock]:  # type: ignore[type-arg]
    clock = FakeClock()
    results = confirmed_up(hosts(*names), net.connect, {n: "{}" for n in names}, seconds,
                           "3f2a9c1e", clock=Clock(clock.now, clock.sleep))  # fmt: skip
    return results, clock


def test_each_armed_host_is_confirmed_over_a_new_connection_with_the_token() -> None:
    net = FakeNet({"a": FakeHost(changes=["add route"]), "b": FakeHost()})
    results, _ = run(net, "a", "b")
    assert [r.data["confirm"]["state"] for r in results] == ["confirmed", "unchanged"]
    assert exit_code(results) == 0
    (apply,) = net.calls("a", "agent apply")
    assert apply.option("--confirm") == "30" and apply.option("--token") == "3f2a9c1e"
    assert apply.timeout is None  # --timeout: a lone host's cut-off answer comes after its revert
    (confirm,) = net.calls("a", "agent confirm")
    assert confirm.option("--token") == "3f2a9c1e"
    assert net.calls("b", "agent confirm") == []  # nothing armed there
    by_host = [t.name for t in net.transports]
    assert by_host.count("a") == 2 and by_host.count("b") == 1 and net.all_closed


def test_a_host_that_cannot_be_reached_again_is_not_confirmed_until_its_window_ends() -> None:
    net = FakeNet({"a": FakeHost(changes=["add route"]), "b": FakeHost(changes=["add bridge"])})

    def cut_off(call):  # type: ignore[no-untyped-def]
        net["b"].refuse = unreachable("root@b.lan")  # the apply cut the admin's path
        return net["b"].default(call)

    net["b"].answers["agent apply"] = cut_off
    results, clock = run(net, "a", "b")
    a, b = results
    assert a.data["confirm"]["state"] == "confirmed"
    assert b.ok and b.data["confirm"]["state"] == "not confirmed"
    assert b.data["confirm"]["text"].startswith("not confirmed (will revert at ")
    assert "Connection refused" in b.data["confirm"]["error"]
    assert 28 <= sum(clock.slept) <= 30  # kept trying for the window, no longer
    assert exit_code(results) == 4


def test_an_apply_without_answer_is_asked_anyway_and_a_late_one_says_reverted() -> None:
    late = agent_json({"confirmed": False, "outcome": "too late", "token": "3f2a9c1e",
                       "message": "too late: the revert was due at 12:00:00"}, rc=1)  # fmt: skip
    net = FakeNet({"a": FakeHost(answers={"agent apply": timeout(), "agent confirm": late})})
    results, _ = run(net, "a")
    (a,) = results
    assert not a.ok and a.data["answered"] is False
    assert a.data["confirm"]["text"].startswith("not confirmed (reverted at ")
    assert exit_code(results) == 4


def test_failed_applies_are_not_confirmed_and_all_failed_is_exit_1() -> None:
    from tests.fake_transport import agent_error

    net = FakeNet({"a": FakeHost(answers={"agent apply": agent_error("a confirmed apply is "
                                                                     "pending here")})})  # fmt: skip
    results, _ = run(net, "a")
    assert results[0].data["confirm"]["state"] == "failed"
    assert net.calls("a", "agent confirm") == []
    assert exit_code(results) == 1


@pytest.mark.parametrize(
    "args",
    [["--confirm", "0.5"], ["--confirm", "nan"], ["--confirm", "3601"], ["--token", "aaaa0001"],
     ["--confirm", "30", "--token", "XYZ"], ["--confirm", "30", "--dry-run"]],
)  # fmt: skip
def test_the_agent_validates_its_options_before_reading_anything(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    from vpcctl.cli.agent import run as agent

    rc = agent(["apply", str(tmp_path) + "/missing.json", "--state-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 2, err
    assert err[0].startswith("error: --") and err[1].startswith("hint: ")
