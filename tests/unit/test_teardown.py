"""`agent down` against the fake kernel: everything vpcctl owns goes, sysctls go back to the
value recorded before vpcctl's first change, state files go except the key (unless
--forget-key), and a failing change neither stops the others nor loses the sysctl record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import homelab
from tests.fakes import FakeSystem
from vpcctl.admin import edits
from vpcctl.admin.render import render
from vpcctl.core.errors import ApplyError
from vpcctl.host.agent import apply, down, keygen
from vpcctl.host.changes import SetForwarding, StopDaemon
from vpcctl.host.state import KEY_FILE, StateDir


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


def _applied(state: StateDir, sysm: FakeSystem) -> None:
    public, _ = keygen(state)
    inv = edits.set_host(homelab(), "vps1", public_key=public)
    apply(render(inv, "vps1"), sysm, state)
    state.write(state.spec, "{}")  # what `up` saves (`apply --save`)
    state.write(state.daemon_log, "a log line\n")


def _files(state: StateDir) -> set[str]:
    return {p.name for p in state.path.iterdir()} - {".agent.lock"}


def test_down_restores_ip_forward_to_its_value_before_vpcctl_and_keeps_only_the_key(
    state: StateDir,
) -> None:
    sysm = FakeSystem(backend="kernel")
    assert sysm.fwd is False
    _applied(state, sysm)
    assert sysm.fwd is True
    assert json.loads(state.sysctls.read_text()) == {"net.ipv4.ip_forward": "0"}
    assert state.sysctls.stat().st_mode & 0o777 == 0o600
    result = down(sysm, state)
    assert SetForwarding(False, restore=True) in result.plan.changes
    assert sysm.fwd is False
    assert sysm.links_ == {} and sysm.routes_ == [] and sysm.nft is None
    assert _files(state) == {KEY_FILE}
    assert "remove state file sysctl.json" in result.messages
    assert down(sysm, state).plan.empty  # a second down has nothing left to do


def test_forwarding_already_on_before_vpcctl_stays_on(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    sysm.fwd = True
    _applied(state, sysm)
    assert not state.sysctls.exists()  # vpcctl changed nothing, so recorded nothing
    result = down(sysm, state)
    assert not any(isinstance(c, SetForwarding) for c in result.plan.changes)
    assert sysm.fwd is True


def test_the_first_value_is_kept_when_forwarding_is_set_again(state: StateDir) -> None:
    """Someone turns forwarding off behind vpcctl's back; the next apply sets it again, but
    the record still holds the host's own value from before vpcctl."""
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    sysm.fwd = False
    inv = edits.set_host(homelab(), "vps1", public_key=keygen(state)[0])
    apply(render(inv, "vps1"), sysm, state)
    assert sysm.fwd is True
    assert json.loads(state.sysctls.read_text()) == {"net.ipv4.ip_forward": "0"}


def test_forget_key_removes_the_key_too(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    down(sysm, state, forget_key=True)
    assert _files(state) == set()


def test_the_daemon_stops_before_docker_networks_and_links_go(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    sysm.procs["daemon.pid"] = ("python", "-m", "vpcctl", "agent", "run", "--managed")
    seen: list[tuple[str, bool]] = []
    down(sysm, state, before_links=lambda: seen.append((sysm.calls[-1], "vb-prod" in sysm.links_)))
    assert seen == [("stop_daemon", True)]  # after the daemon, while the bridges still exist
    assert "daemon.pid" not in sysm.procs


def test_a_failing_change_does_not_stop_the_others_and_the_record_survives(
    state: StateDir,
) -> None:
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    sysm.fail_on["nft_delete"] = "nft: cannot delete the table"
    with pytest.raises(ApplyError, match=r"teardown incomplete: delete .*cannot delete the table"):
        down(sysm, state)
    assert sysm.links_ == {} and sysm.fwd is False  # the rest went on
    assert state.sysctls.exists() and state.applied.exists()  # kept for the second down
    again = down(sysm, state)
    assert [type(c).__name__ for c in again.plan.changes] == ["DeleteFirewall"]
    assert _files(state) == {KEY_FILE}


def test_a_first_apply_rolled_back_restores_forwarding(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    public, _ = keygen(state)
    inv = edits.set_host(homelab(), "vps1", public_key=public)
    sysm.fail_on["nft_load"] = "nft: boom"
    with pytest.raises(ApplyError, match="restored the state before vpcctl"):
        apply(render(inv, "vps1"), sysm, state)
    assert sysm.fwd is False and sysm.links_ == {}


def test_stop_daemon_is_planned_first(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    sysm.procs["daemon.pid"] = ("x", "--managed")
    p = down(sysm, state).plan
    assert isinstance(p.changes[0], StopDaemon)


def test_discard_removes_an_empty_state_directory_only(state: StateDir) -> None:
    sysm = FakeSystem(backend="kernel")
    _applied(state, sysm)
    down(sysm, state, forget_key=True)
    (state.path / "endpoints.json").write_text("[]")  # the operator's file: it all stays
    assert not state.discard() and (state.path / "endpoints.json").exists()
    (state.path / "endpoints.json").unlink()
    assert state.discard() and not state.path.exists()


def test_every_state_file_but_the_operators_is_one_that_down_removes(state: StateDir) -> None:
    """A new state file (a new path property of StateDir) must be added to ``written()``, or
    `agent down` would leave it behind."""
    paths = {
        getattr(state, name)
        for name, attr in vars(StateDir).items()
        if isinstance(attr, property) and isinstance(getattr(state, name), Path)
    }
    # the operator's input, and the preshared keys (kept like the key: `--forget-key` removes them)
    assert paths - set(state.written()) == {state.static_endpoints, state.psk}
