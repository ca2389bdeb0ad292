"""Issue 12 item 3: `vpcctl up --confirm SECONDS` over real SSH (paramiko -> sshd in each lab
host), from the admin namespace.

The cut is one the spec itself makes, the mistake confirmed apply is for: a VPC whose range
holds the admin's own address (192.0.2.100; vpcctl checks VPC ranges against the hosts' SSH
and endpoint addresses, but cannot know where the admin sits). The host whose slice holds it
puts that /29 on its VPC bridge, so its replies to the admin go there, and the admin can no
longer reach it: the apply's own answer and every new connection are cut off. It reverts by
itself; the host is then reachable again, exactly as before.

One module-scoped lab (two hosts); the confirmed apply runs first and its deadline passes
while the cut one is under way, so one wait covers both. The window is short (the test-only
$VPCCTL_TEST_CONFIRM_MIN could lower the admin's 10 s minimum, but under load the confirmation
round needs those seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import Lab, LabHost
from tests.lab.sshmesh import SshMesh
from tests.paths import ROOT
from tests.snapshot import _processes as processes
from tests.snapshot import diff
from tests.snapshot import snapshot as host_snapshot
from tests.waiting import wait_until
from vpcctl.core.confirm import MIN_ENV

pytestmark = pytest.mark.lab

SECONDS = 10  # the window (the minimum; the reconnection under load takes seconds)
ADMIN_RANGE = "192.0.2.96/27"  # holds the admin (192.0.2.100): s1's slice is 192.0.2.96/29


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshMesh]:
    require_lab()
    with Lab(tmp_path_factory.mktemp("confirmlab")) as lab:
        m = SshMesh(lab)
        assert m.admin.underlay_ip == "192.0.2.100"
        m.add_host("s1")
        m.add_host("s2")
        m.vpcctl("vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        m.vpcctl("up")
        yield m


def admin_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "vpcctl", *args]


def admin_env(m: SshMesh) -> dict[str, str]:
    return {**m.env, MIN_ENV: "2"}


def agent(m: SshMesh, host: str, *args: str) -> Any:
    """`vpcctl agent ... --json` on the host itself (not over SSH: it works while cut off)."""
    res = m.lab.run(m.hosts[host], admin_argv("agent", *args, "--json"),
                    env={"PYTHONPATH": str(ROOT)}, check=False)  # fmt: skip
    return json.loads(res.stdout)


def snapshot(lab: Lab, host: LabHost) -> dict[str, str]:
    """tests/snapshot.py's host state (links, addresses, routes of every table, rules, sysctls,
    the whole nftables ruleset, iptables), vpcctl's processes by command line (a restarted
    resolver has a new pid, the SSH sessions come and go), and the applied and saved specs."""
    state = host_snapshot(lab, host)
    state["processes"] = "\n".join(
        sorted(
            line.split(" ", 1)[1]
            for line in state["processes"].splitlines()
            if ("vpcctl" in line or "wireguard-go" in line) and "agent revert" not in line
        )
    )
    state["specs"] = lab.run(host, "cat /etc/vpcctl/applied.json /etc/vpcctl/spec.json").stdout
    return state


def settled(lab: Lab, host: LabHost, timeout: float = 20.0) -> dict[str, str]:
    """The host's snapshot once two in a row (0.5 s apart) agree: the kernel adds a bridge's IPv6
    link-local address and its routes on its own, some time after the bridge gets a carrier."""
    last = snapshot(lab, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = snapshot(lab, host)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{host.name}'s state kept changing for {timeout:g} s")


def assert_settles_to(lab: Lab, host: LabHost, expected: dict[str, str]) -> None:
    """``host`` reaches ``expected`` (the kernel's own late IPv6 entries given time) and stays."""
    got = settled(lab, host)
    assert not diff(expected, got)


def test_a_confirmed_apply_stays_and_one_that_cuts_the_admin_off_reverts(mesh: SshMesh) -> None:
    m = mesh
    # (b) a confirmed apply: confirmed over a new connection, and it stays past its deadline
    m.vpcctl("vpc", "add", "dev", "--cidr", "10.101.0.0/16")
    res = m.lab.run(m.admin, admin_argv("up", "s2", "--confirm", str(SECONDS), "--json"),
                    env=admin_env(m), check=False)  # fmt: skip
    b_deadline = time.time() + SECONDS
    assert res.returncode == 0, res.stdout + res.stderr
    (r2,) = json.loads(res.stdout)
    assert r2["confirm"]["state"] == "confirmed" and r2["changed"], r2
    token = r2["revert"]["token"]
    state = agent(m, "s2", "status")["confirm"]
    assert state["pending"] is False and state["last"]["outcome"] == "confirmed", state
    assert state["last"]["token"] == token
    m.lab.run(
        m.hosts["s2"], "test ! -e /etc/vpcctl/revert.pid && test ! -e /etc/vpcctl/confirm.json"
    )
    confirmed = settled(m.lab, m.hosts["s2"])
    assert "10.101." in confirmed["addresses"]

    # (a) an apply that cuts the admin off s1: not confirmed, reverted by s1 itself
    before = settled(m.lab, m.hosts["s1"])
    m.vpcctl("vpc", "add", "office", "--cidr", ADMIN_RANGE, "--slice-prefix", "29")
    up = m.lab.popen(m.admin, admin_argv("up", "s1", "--confirm", str(SECONDS), "--json",
                                         "--connect-timeout", "2"),
                     env=admin_env(m), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    pending: dict[str, Any] = {}

    def armed() -> bool:  # the record is written first, then the reverter started
        pending.clear()
        pending.update(agent(m, "s1", "status")["confirm"])
        return bool(pending.get("pending") and pending.get("reverter_running"))

    wait_until(armed, timeout=30, what="s1 to arm its revert")
    assert pending["seconds_left"] <= SECONDS
    assert pending["deadline_text"].count(":") == 2
    cut = m.lab.run(m.admin, ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o",
                              "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              f"root@{m.hosts['s1'].underlay_ip}", "true"],
                    env=m.env, check=False)  # fmt: skip
    if agent(m, "s1", "status")["confirm"]["pending"]:  # still within the window: cut off
        assert cut.returncode == 255, cut.stderr
    out, err = up.communicate(timeout=90)
    assert up.returncode == 4, out + err
    (r1,) = json.loads(out)
    assert r1["confirm"]["state"] == "not confirmed", r1
    assert r1["confirm"]["revert_at_text"] and r1["confirm"]["error"], r1

    def reverted() -> bool:
        last = agent(m, "s1", "status")["confirm"]
        return not last["pending"] and (last["last"] or {}).get("outcome") == "reverted"

    wait_until(reverted, timeout=30, what="s1 to revert")
    wait_until(lambda: "agent revert" not in processes(m.hosts["s1"]), timeout=10,
               what="s1's reverter to exit")  # fmt: skip
    assert_settles_to(m.lab, m.hosts["s1"], before)
    # reachable again over SSH; the reverted spec is not brought back without --confirm
    # (cron's `vpcctl sync` would cut the admin off again)
    res = m.vpcctl("up", "s1", check=False)
    assert res.returncode == 1 and "was reverted at" in res.stdout, res.stdout + res.stderr
    # and at its previous state: with the bad VPC gone, nothing to do
    m.vpcctl("vpc", "rm", "office")
    m.vpcctl("vpc", "rm", "dev")
    res = m.vpcctl("plan", "s1", "--exit-code", check=False)
    assert res.returncode == 0, res.stdout + res.stderr

    # (b) again: its deadline is long past, and s2 is as it was confirmed
    assert time.time() > b_deadline + 1
    assert_settles_to(m.lab, m.hosts["s2"], confirmed)
    m.vpcctl("vpc", "add", "dev", "--cidr", "10.101.0.0/16")
    res = m.vpcctl("plan", "s2", "--exit-code", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
