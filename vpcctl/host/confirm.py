"""Confirmed apply on a host (`agent apply --confirm SECONDS`, `agent confirm`): the host keeps
what it had before, and a detached process of its own (``agent revert``, started through
processes.py in its own session, so it outlives the SSH session) converges it back unless the
admin confirms in time.

Rules (README "Confirmed apply"):

* the revert target is the last *confirmed* state: a new ``--confirm`` apply while one is pending
  replaces the pending one (new token, new deadline) but keeps its target;
* a plain apply (without ``--confirm``) that would change something while one is pending is
  refused: confirm first, or wait for the revert;
* an apply that fails (and rolls back) leaves the confirm state as it was before it;
* the deadline counts from the end of the apply; a confirmation after it is refused ("too
  late") and the revert goes ahead;
* everything here runs under the state directory's lock (the caller's, or taken here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpcctl.core.confirm import Pending
from vpcctl.core.errors import ApplyError, LockError, VpcctlError
from vpcctl.core.keys import write_secret
from vpcctl.host.state import StateDir

if TYPE_CHECKING:
    from vpcctl.host.agent import Result


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def pending(state: StateDir) -> Pending | None:
    text = state.read(state.confirm)
    return Pending.from_text(text) if text is not None else None


def last(state: StateDir) -> dict[str, Any] | None:
    """How the last confirmed apply ended: token, outcome (confirmed, reverted, revert failed),
    at (epoch), error, spec (sha256 of the spec that was reverted)."""
    try:
        data = json.loads(state.read(state.confirm_last) or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _write_last(state: StateDir, token: str, outcome: str, **more: Any) -> None:
    record = {"token": token, "outcome": outcome, "at": round(time.time(), 3), **more}
    state.write(state.confirm_last, json.dumps(record, indent=2) + "\n")


def reverter_argv(state: StateDir, token: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "vpcctl", "agent", "revert", "--when-due", "--token", token,
            "--state-dir", str(state.path))  # fmt: skip


def _start_reverter(state: StateDir, token: str) -> None:
    from vpcctl.host import processes

    processes.start(reverter_argv(state, token), state.revert_pid, state.revert_log)


def _drop(state: StateDir) -> None:
    """No revert pending any more: the record goes, the reverter is stopped (unless it is us)."""
    from vpcctl.host import processes

    with contextlib.suppress(FileNotFoundError):
        state.confirm.unlink()
    if processes.running(state.revert_pid) is None:
        with contextlib.suppress(FileNotFoundError):
            state.revert_pid.unlink()
        return
    with contextlib.suppress(OSError, ValueError):
        if int(state.revert_pid.read_text().strip()) == os.getpid():
            state.revert_pid.unlink()
            return
    processes.stop(state.revert_pid)


def refuse_while_pending(state: StateDir, spec_text: str | None = None) -> None:
    """A plain apply that would change this host while a confirmed apply is pending, or that
    brings back the very spec that was just reverted (cron's `vpcctl sync` would otherwise cut
    the admin off again, for good)."""
    p = pending(state)
    done = last(state) if p is None and spec_text is not None else None
    if (
        done is not None
        and done.get("outcome") == "reverted"
        and done.get("spec") == _sha(spec_text or "")
    ):
        raise ApplyError(
            f"this HostSpec was reverted at {clock(float(done.get('at') or 0))}: it was applied "
            "with --confirm and not confirmed in time; nothing changed",
            "fix the inventory (did this change cut you off?), or apply it again with "
            "`vpcctl up --confirm SECONDS`",
        )
    if p is None:
        return
    raise ApplyError(
        f"a confirmed apply is pending here (it reverts at {clock(p.deadline)} unless "
        "confirmed); nothing changed",
        "confirm it first (`vpcctl agent confirm` here), wait for the revert, or push with "
        "`vpcctl up --confirm SECONDS` (which replaces the pending one)",
    )


def apply_confirmed(
    state: StateDir,
    spec_text: str,
    token: str,
    seconds: float,
    save: Path | None,
    run: Callable[[], Result],
    start: Callable[[StateDir, str], None] | None = None,
) -> tuple[Result, Pending | None]:
    """Arm the revert, store the spec (``save``), apply (``run``), and start the window at the
    end of the apply. Returns the result and the pending record (None: nothing changed, so
    nothing to confirm). The caller holds the state lock. ``start`` starts the reverter
    (tests pass their own)."""
    start = start or _start_reverter
    old = pending(state)
    if old is not None:  # replaced: same target, new token and deadline
        armed = Pending(token, seconds, time.time() + seconds, old.previous, old.saved,
                        old.saved_path)  # fmt: skip
    else:
        armed = Pending(
            token, seconds, time.time() + seconds, state.read(state.applied),
            state.read(save) if save else None, str(save) if save else None,
        )  # fmt: skip
    state.write(state.confirm, armed.to_text())
    start(state, token)
    if save is not None:
        state.save_spec(spec_text, save)
    try:
        result = run()
    except BaseException:
        if old is None:
            _drop(state)
        else:  # as it was before this apply
            state.write(state.confirm, old.to_text())
            start(state, old.token)
        raise
    if old is None and result.plan.empty:
        _drop(state)
        return result, None
    armed = replace(armed, deadline=time.time() + seconds)
    state.write(state.confirm, armed.to_text())
    return result, armed


def confirm(
    state: StateDir,
    token: str | None,
    wait: float,
    start: Callable[[StateDir, str], None] | None = None,
) -> dict[str, Any]:
    """Disarm the pending revert (the one with ``token``, or any when None). The answer says
    ``confirmed`` (bool), ``outcome`` and ``message``; a confirmation after the deadline is
    refused and the revert goes ahead."""
    with state.locked(wait):
        p = pending(state)
        now = time.time()
        if p is not None and token in (None, p.token):
            if p.deadline <= now:
                _ensure_reverter(state, p, start or _start_reverter)
                return _answer(False, "too late", p.token, f"too late: the revert was due at "
                               f"{clock(p.deadline)}; it goes ahead", p.deadline)  # fmt: skip
            _drop(state)
            _write_last(state, p.token, "confirmed")
            return _answer(True, "confirmed", p.token, f"confirmed: the revert due at "
                           f"{clock(p.deadline)} is cancelled")  # fmt: skip
        if p is not None:
            return _answer(False, "replaced", token, "another confirmed apply is pending here "
                           f"(it reverts at {clock(p.deadline)}); not confirmed")  # fmt: skip
        done = last(state)
        if token is None:
            return _answer(True, "nothing pending", None, "nothing to confirm")
        if done is not None and done.get("token") == token:
            what = str(done.get("outcome"))
            at = clock(float(done.get("at") or 0))
            ok = what == "confirmed"
            return _answer(
                ok,
                what,
                token,
                f"{what} at {at}" if ok else f"too late: {what} at {at}",
                float(done.get("at") or 0),
            )
        return _answer(False, "unknown", token, "no confirmed apply with this token here (its "
                       "apply failed and rolled back, or never arrived)")  # fmt: skip


def _answer(
    ok: bool, outcome: str, token: str | None, message: str, at: float | None = None
) -> dict[str, Any]:
    """``at``: when it reverted (or was due to), epoch seconds on this host's clock."""
    return {"confirmed": ok, "outcome": outcome, "token": token, "message": message, "at": at}


def _ensure_reverter(state: StateDir, p: Pending, start: Callable[[StateDir, str], None]) -> None:
    from vpcctl.host import processes

    if processes.running(state.revert_pid) is None:
        start(state, p.token)


def disarm(state: StateDir) -> None:
    """`agent down` removes everything: no revert may bring it back. Caller holds the lock."""
    p = pending(state)
    if p is not None:
        _drop(state)
        _write_last(state, p.token, "cancelled by agent down")


def revert_when_due(state: StateDir, token: str, before: Callable[[], None]) -> str:
    """The reverter: wait for the deadline of the pending apply ``token`` (re-read each time:
    the end of the apply moves it), then, under the lock, converge back. ``before`` runs just
    before the revert (to ignore signals from then on)."""
    while True:
        p = pending(state)
        if p is None or p.token != token:
            return "nothing to revert (confirmed, replaced or already reverted)"
        left = p.deadline - time.time()
        if left > 0:
            time.sleep(min(left, 5.0))
            continue
        try:
            with state.locked(wait=300):
                p = pending(state)
                if p is None or p.token != token:
                    continue
                if p.deadline > time.time():
                    continue
                before()
                return revert(state, p)
        except LockError:
            continue


def revert(state: StateDir, p: Pending) -> str:
    """Converge back to ``p.previous`` (the full path), or remove everything vpcctl made when
    nothing was applied before; restore the saved spec file. Caller holds the lock."""
    from vpcctl.core.spec import from_json

    reverted = state.read(state.applied) or ""
    error = None
    try:
        if p.previous is None:
            _down(state)
        else:
            from vpcctl.host.agent import apply

            apply(from_json(p.previous, str(state.confirm)), None, state)
    except VpcctlError as exc:
        error = exc.message
    if p.saved_path:
        path = Path(p.saved_path)
        if p.saved is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            write_secret(path, p.saved.encode("utf-8"))
    _write_last(state, p.token, "reverted" if error is None else "revert failed", error=error,
                spec=_sha(reverted))  # fmt: skip
    _drop(state)
    return f"reverted: not confirmed by {clock(p.deadline)}" + (f"; {error}" if error else "")


def _down(state: StateDir) -> None:
    from vpcctl.host import docker
    from vpcctl.host.agent import down
    from vpcctl.host.kernel import LinuxSystem

    applied = state.applied_spec()
    mesh = applied.mesh if applied else None
    docker.remove_networks(mesh)
    system = LinuxSystem()
    try:
        down(system, state, mesh)
    finally:
        system.close()


def status(state: StateDir) -> dict[str, Any]:
    """For `agent status`: the pending revert (deadline, HH:MM:SS, seconds left, whether the
    reverter runs) and how the last one ended."""
    from vpcctl.host import processes

    p = pending(state)
    out: dict[str, Any] = p.describe(time.time()) if p else {"pending": False}
    if p is not None:
        out["deadline_text"] = clock(p.deadline)
        out["reverter_running"] = processes.running(state.revert_pid) is not None
    out["last"] = last(state)
    return out
