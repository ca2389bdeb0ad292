"""The host side of confirmed apply (vpcctl/host/confirm.py) on a state directory in tmp, with
the apply and the reverter's start passed in: what is armed, kept, replaced, confirmed and
refused. (The reverter itself and the revert run in tests/lab/test_confirm_lab.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vpcctl.core.confirm import Pending
from vpcctl.core.errors import ApplyError
from vpcctl.host import confirm as hc
from vpcctl.host.agent import Result
from vpcctl.host.plans import Change, Plan
from vpcctl.host.state import StateDir

OLD = '{"spec": "old"}\n'
NEW = '{"spec": "new"}\n'


class Starts:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def __call__(self, state: StateDir, token: str) -> None:
        self.tokens.append(token)


def changed(state: StateDir, text: str = NEW) -> Result:
    state.write(state.applied, text)  # what a successful apply leaves
    return Result(host="h", plan=Plan((Change(),)), applied=1)


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir(tmp_path / "etc")
    s.write(s.applied, OLD)
    s.write(s.spec, OLD)
    return s


def test_arming_keeps_the_previous_spec_and_the_saved_file(state: StateDir) -> None:
    starts = Starts()
    t0 = time.time()
    result, p = hc.apply_confirmed(state, NEW, "aaaa0001", 30, state.spec,
                                   lambda: changed(state), starts)  # fmt: skip
    assert p is not None and result.applied == 1 and starts.tokens == ["aaaa0001"]
    assert p.previous == OLD and p.saved == OLD and p.saved_path == str(state.spec)
    assert t0 + 30 <= p.deadline <= time.time() + 30  # from the end of the apply
    assert hc.pending(state) == p and state.read(state.spec) == NEW
    assert state.confirm.stat().st_mode & 0o777 == 0o600


def test_a_first_apply_reverts_to_nothing(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "fresh")
    _, p = hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, lambda: changed(state), Starts())
    assert p is not None and p.previous is None and p.saved_path is None


def test_nothing_changed_arms_nothing(state: StateDir) -> None:
    empty = Result(host="h", plan=Plan(()))
    _, p = hc.apply_confirmed(state, OLD, "aaaa0001", 30, None, lambda: empty, Starts())
    assert p is None and hc.pending(state) is None


def test_a_new_confirmed_apply_replaces_the_pending_one_and_keeps_its_target(
    state: StateDir,
) -> None:
    starts = Starts()
    hc.apply_confirmed(state, NEW, "aaaa0001", 30, state.spec, lambda: changed(state), starts)
    newer = '{"spec": "newer"}\n'
    _, p = hc.apply_confirmed(state, newer, "bbbb0002", 60, state.spec,
                              lambda: changed(state, newer), starts)  # fmt: skip
    assert p is not None and p.token == "bbbb0002" and p.seconds == 60
    assert p.previous == OLD and p.saved == OLD  # the last confirmed state, not NEW
    assert starts.tokens == ["aaaa0001", "bbbb0002"]


def test_a_failed_apply_leaves_the_confirm_state_as_it_was(state: StateDir) -> None:
    starts = Starts()

    def fails() -> Result:
        raise ApplyError("boom; restored the previously applied state", None)

    with pytest.raises(ApplyError):
        hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, fails, starts)
    assert hc.pending(state) is None
    _, first = hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, lambda: changed(state), starts)
    with pytest.raises(ApplyError):
        hc.apply_confirmed(state, NEW, "bbbb0002", 30, None, fails, starts)
    assert hc.pending(state) == first and starts.tokens[-1] == "aaaa0001"  # its reverter again


def test_a_plain_apply_is_refused_while_one_is_pending(state: StateDir) -> None:
    hc.refuse_while_pending(state)  # nothing pending: fine
    hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, lambda: changed(state), Starts())
    with pytest.raises(ApplyError) as exc:
        hc.refuse_while_pending(state)
    assert "pending" in exc.value.message and "nothing changed" in exc.value.message
    assert exc.value.hint and "agent confirm" in exc.value.hint and "--confirm" in exc.value.hint


def test_confirm_with_the_token_disarms_and_remembers(state: StateDir) -> None:
    hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, lambda: changed(state), Starts())
    other = hc.confirm(state, "bbbb0002", 1)
    assert other["confirmed"] is False and other["outcome"] == "replaced"
    assert hc.pending(state) is not None
    done = hc.confirm(state, "aaaa0001", 1)
    assert done["confirmed"] is True and hc.pending(state) is None
    assert not state.revert_pid.exists()
    assert hc.confirm(state, "aaaa0001", 1)["confirmed"] is True  # again: already confirmed
    assert hc.confirm(state, "cccc0003", 1)["outcome"] == "unknown"
    assert hc.confirm(state, None, 1)["outcome"] == "nothing pending"
    assert json.loads(state.read(state.confirm_last) or "")["outcome"] == "confirmed"


def test_too_late_is_refused_and_the_revert_goes_ahead(state: StateDir) -> None:
    state.write(state.confirm, Pending("aaaa0001", 10, time.time() - 1, OLD).to_text())
    starts = Starts()
    answer = hc.confirm(state, "aaaa0001", 1, starts)
    assert answer["confirmed"] is False and answer["outcome"] == "too late"
    assert hc.pending(state) is not None and starts.tokens == ["aaaa0001"]  # no reverter ran


def test_a_reverted_token_is_reported_as_too_late(state: StateDir) -> None:
    state.write(state.confirm_last, json.dumps({"token": "aaaa0001", "outcome": "reverted",
                                                "at": 1000.0}))  # fmt: skip
    answer = hc.confirm(state, "aaaa0001", 1)
    assert answer["confirmed"] is False and answer["message"].startswith("too late: reverted")
    assert answer["at"] == 1000.0


def test_status_shows_the_deadline(state: StateDir) -> None:
    assert hc.status(state)["pending"] is False
    hc.apply_confirmed(state, NEW, "aaaa0001", 30, None, lambda: changed(state), Starts())
    s = hc.status(state)
    assert s["pending"] is True and s["deadline_text"] == hc.clock(s["deadline"])
    assert 0 < s["seconds_left"] <= 30 and s["reverter_running"] is False
    hc.disarm(state)
    assert hc.status(state)["last"]["outcome"] == "cancelled by agent down"


def test_the_spec_just_reverted_is_refused_without_confirm(state: StateDir) -> None:
    hc.apply_confirmed(state, NEW, "aaaa0001", 30, state.spec, lambda: changed(state), Starts())
    p = hc.pending(state)
    assert p is not None
    state.write(state.applied, NEW)
    # what the reverter records (the revert itself, a kernel apply, runs in the lab)
    hc._write_last(state, p.token, "reverted", spec=hc._sha(NEW))
    hc._drop(state)
    with pytest.raises(ApplyError) as exc:
        hc.refuse_while_pending(state, NEW)
    assert "reverted" in exc.value.message and exc.value.hint and "--confirm" in exc.value.hint
    hc.refuse_while_pending(state, '{"spec": "fixed"}\n')  # a changed spec goes through
