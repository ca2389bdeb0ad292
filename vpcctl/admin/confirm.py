"""`vpcctl up --confirm SECONDS`, the admin side: apply every host with a revert armed there,
then, once all have applied, confirm each one over a NEW SSH connection. A host that cannot be
reached again (the new spec cut the admin's path) is not confirmed and reverts by itself.

Timing: each host's window starts at the end of its apply (the host keeps the time). Once the
first apply has answered and half of its window is gone, applies that have not answered are
given up on (see _GiveUp), so that the confirmation round has the other half; a lone host's
apply is waited for up to --timeout (its answer, cut off, comes once it has reverted). The host alone decides what is too late; the admin's clock only
bounds how long it keeps trying to reconnect."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vpcctl.admin import fanout
from vpcctl.admin.fanout import Connect, HostResult
from vpcctl.admin.transport import HostKeyError, Transport, TransportError
from vpcctl.core import confirm as cc
from vpcctl.core.errors import AgentError
from vpcctl.core.model import Host

PAUSE = 1.0  # seconds between two reconnection attempts


@dataclass(frozen=True)
class Clock:
    """The admin side's time (tests pass their own)."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


def hhmmss(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


class _GiveUp:
    """Phase 1's rule for a host whose apply does not answer: once the first answer is in and
    half of its window is gone, the applies still running are given up on (their connections
    closed: ended and rolled back there if still applying; a host whose answer was cut off
    reverts by itself), so that the confirmation round has the other half."""

    def __init__(self, seconds: float, clock: Clock) -> None:
        self.seconds = seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.running: dict[str, Transport] = {}
        self.first: float | None = None
        self.done = threading.Event()

    def answered(self) -> None:
        with self.lock:
            if self.first is None:
                self.first = self.clock.now()

    def watch(self) -> None:
        while not self.done.wait(0.1):
            with self.lock:
                late = self.first is not None and self.clock.now() > self.first + self.seconds / 2
                stuck = list(self.running.values()) if late else []
            for t in stuck:
                with contextlib.suppress(Exception):
                    t.close()


def _apply_work(
    specs: dict[str, str],
    seconds: float,
    token: str,
    clock: Clock,
    give_up: _GiveUp,
    prepare: Callable[[Host, Transport], object] | None,
) -> Callable[[Host, Transport], HostResult]:
    def work(host: Host, t: Transport) -> HostResult:
        extra = ("--confirm", f"{seconds:g}", "--token", token)
        if prepare is not None:  # the preshared keys offered to it (before anything is armed)
            prepare(host, t)
        with give_up.lock:
            give_up.running[host.name] = t
        try:
            r = fanout.up_one(host, t, specs[host.name], *extra)
        except TransportError as exc:  # sent, but no answer (cut off, given up): perhaps armed
            return HostResult(host.name, ok=False, error=exc.message, hint=exc.hint,
                              data={"answered": False, "until": clock.now() + seconds})  # fmt: skip
        finally:
            with give_up.lock:
                give_up.running.pop(host.name, None)
        give_up.answered()
        armed = r.data.pop("confirm", None)  # the revert the host armed (its own record)
        left = armed.get("seconds_left") if isinstance(armed, dict) else None
        r.data["answered"] = True
        r.data["until"] = clock.now() + (float(left) if isinstance(left, int | float) else 0.0)
        r.data["armed"] = armed is not None
        r.data["revert"] = armed
        return r

    return work


def _patient(connect: Connect, until: dict[str, float], clock: Clock) -> Connect:
    """``connect``, retried until the host's window is over (a changed host key is final)."""

    def again(host: Host) -> Transport:
        while True:
            try:
                return connect(host)
            except HostKeyError:
                raise
            except TransportError as exc:
                if clock.now() + PAUSE >= until[host.name]:
                    raise TransportError(
                        f"{exc.message} (tried until {hhmmss(until[host.name])})", exc.hint
                    ) from None
                clock.sleep(PAUSE)

    return again


def _confirm_work(
    token: str, until: dict[str, float], clock: Clock
) -> Callable[[Host, Transport], HostResult]:
    def work(host: Host, t: Transport) -> HostResult:
        left = max(1.0, until[host.name] - clock.now())
        argv = fanout.agent_argv(host, "agent", "confirm", "--token", token, "--json",
                                 "--wait", f"{left:.0f}")  # fmt: skip
        done = t.run(argv, timeout=left + 10)
        answer = parse_answer(host, done.rc, done.stdout, done.stderr)
        return HostResult(host.name, ok=bool(answer["confirmed"]), data={"answer": answer})

    return work


def parse_answer(host: Host, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
    """`agent confirm --json`'s answer (it prints one also when it exits 1: not confirmed)."""
    if rc in (0, 1) and stdout.lstrip().startswith("{"):
        try:
            data = json.loads(stdout)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("confirmed"), bool):
            data["message"] = str(data.get("message", ""))[:300]
            return data
    from vpcctl.admin.transport import Completed

    fanout._json(host, Completed(rc, stdout, stderr), "agent confirm")  # raises its error
    raise AgentError(f"{host.name}: agent confirm answered no verdict", fanout.NO_JSON_HINT)


def confirmed_up(
    hosts: Sequence[Host],
    connect: Connect,
    specs: dict[str, str],
    seconds: float,
    token: str,
    *,
    clock: Clock | None = None,
    prepare: Callable[[Host, Transport], object] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[HostResult], None] | None = None,
) -> list[HostResult]:
    """Apply (all at once; ``prepare`` first on the same connection: the preshared keys), then
    confirm each host that armed a revert (or did not answer).
    Every result's ``data["confirm"]`` is its outcome: ``state`` (core/confirm.py's words),
    ``revert_at`` (epoch, the admin's clock) and ``revert_at_text`` (HH:MM:SS)."""
    clock = clock or Clock()
    give_up = _GiveUp(seconds, clock)
    watcher = threading.Thread(target=give_up.watch, name="vpcctl-confirm", daemon=True)
    watcher.start()
    try:
        applied = fanout.for_each(hosts, connect, _apply_work(specs, seconds, token, clock, give_up, prepare),
                                  parallel=len(hosts), on_start=on_start, on_done=on_done)  # fmt: skip
    finally:
        give_up.done.set()
    ask = [h for h, r in zip(hosts, applied, strict=True) if _worth_asking(r)]
    until = {r.host: float(r.data["until"]) for r in applied if _worth_asking(r)}
    asked = fanout.for_each(ask, _patient(connect, until, clock),
                            _confirm_work(token, until, clock), parallel=max(1, len(ask)))  # fmt: skip
    answers = {r.host: r for r in asked}
    return [_merge(r, answers.get(r.host)) for r in applied]


def _worth_asking(r: HostResult) -> bool:
    return (r.ok and bool(r.data.get("armed"))) or (not r.ok and r.data.get("answered") is False)


def _merge(applied: HostResult, asked: HostResult | None) -> HostResult:
    answer = asked.data.get("answer", {}) if asked is not None else {}
    ok = asked is not None and asked.ok
    reverted = str(answer.get("outcome")) in ("too late", "reverted", "revert failed")
    until = applied.data.get("until")
    at = float(until) if isinstance(until, float) and asked is not None else None
    armed = applied.data.get("armed") if applied.data.get("answered") else None
    if applied.data.get("answered") is None:  # failed before or while answering
        armed = False
    if answer.get("outcome") == "unknown":  # nothing armed there: its apply was stopped
        at = None
    if reverted and isinstance(answer.get("at"), int | float) and answer["at"] > 0:
        at = float(answer["at"])  # the host's own clock says when
    state = cc.outcome(applied.ok, armed, ok, reverted, hhmmss(at) if at else None)
    applied.data["confirm"] = {
        "state": state.split(" (")[0],
        "text": state,
        "revert_at": round(at, 3) if at and not ok else None,
        "revert_at_text": hhmmss(at) if at and not ok else None,
        "error": None if asked is None or ok else (asked.error or answer.get("message")),
    }
    if asked is not None:
        applied.seconds += asked.seconds
    return applied


def exit_code(results: Sequence[HostResult]) -> int:
    """0: every host confirmed or unchanged; 1: every apply failed (nothing changed anywhere);
    4: some host could not be confirmed (it reverts) or failed."""
    states = [r.data.get("confirm", {}).get("state") for r in results]
    if all(s in (cc.CONFIRMED, cc.UNCHANGED) for s in states):
        return 0
    if all(s == cc.FAILED for s in states):
        return 1
    return 4
