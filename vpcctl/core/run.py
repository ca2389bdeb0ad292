"""The one place vpcctl starts other programs (ip, nft, wg, modprobe, wireguard-go, the resolver,
pip), for both sides: one ``which``, one timeout, one error mapping.

A program that is missing, cannot be started or outlives its timeout raises
:class:`~vpcctl.core.errors.ProgramError` (message ``[WHAT: ]PROGRAM not found`` /
``cannot run PROGRAM: REASON`` / ``PROGRAM did not finish within N s``, with the caller's hint);
a program that ran and exited non-zero is a :class:`Done` with its code, for the caller to read.
:func:`output` is the best-effort form for cheap reads (None on any failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vpcctl.core.errors import ProgramError

TIMEOUT = 30.0  # seconds a program may run unless the caller says otherwise


@dataclass(frozen=True, slots=True)
class Done:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def which(program: str) -> str | None:
    """The program's path on PATH (or the path itself when it names an executable), else None."""
    return shutil.which(program)


def _fail(what: str | None, problem: str, hint: str | None) -> ProgramError:
    return ProgramError(f"{what}: {problem}" if what else problem, hint)


def _exe(argv: Sequence[str], what: str | None, hint: str | None) -> list[str]:
    exe = which(argv[0])
    if exe is None:
        raise _fail(what, f"{argv[0]} not found", hint)
    return [exe, *argv[1:]]


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = TIMEOUT,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    hint: str | None = None,
) -> Done:
    """Run ``argv`` to completion (text in and out, stdin closed unless ``input``)."""
    args = _exe(argv, what, hint)
    try:
        done = subprocess.run(
            args, input=input, capture_output=True, text=True, check=False, timeout=timeout,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL if input is None else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise _fail(what, f"{argv[0]} did not finish within {timeout:g} s", hint) from None
    except OSError as exc:
        raise _fail(what, f"cannot run {argv[0]}: {exc.strerror}", hint) from None
    return Done(done.returncode, done.stdout, done.stderr)


def output(argv: Sequence[str], *, input: str | None = None, timeout: float = 10.0) -> str | None:
    """The program's stdout when it ran and exited 0; None otherwise (missing, failed, slow)."""
    try:
        done = run(argv, input=input, timeout=timeout)
    except ProgramError:
        return None
    return done.stdout if done.ok else None


class Spawned:
    """A program started in its own session (it outlives vpcctl and its SSH session)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self.pid = proc.pid

    def poll(self) -> int | None:
        """Its exit code if it has exited, else None."""
        return self._proc.poll()

    def wait(self, timeout: float) -> int | None:
        """Its exit code once it exits within ``timeout`` seconds, else None (still running)."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    hint: str | None = None,
) -> Spawned:
    """Start ``argv`` detached: own session, cwd /, stdin closed, stdout and stderr appended to
    ``log`` (created 0600 in a 0700 directory)."""
    args = _exe(argv, what, hint)
    try:
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise _fail(what, f"cannot open log {log}: {exc.strerror}", "run as root") from None
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", close_fds=True,
            start_new_session=True, env=dict(env) if env is not None else None,
        )  # fmt: skip
    except OSError as exc:
        raise _fail(what, f"cannot run {argv[0]}: {exc.strerror}", hint) from None
    finally:
        os.close(fd)
    return Spawned(proc)
