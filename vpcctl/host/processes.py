"""Background processes the agent keeps running (the resolver): start detached, find by pid
file, stop. The edge for processes; the agent reaches it through the System protocol."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from vpcctl.core import run
from vpcctl.core.errors import KernelError


def running(pidfile: Path) -> tuple[str, ...] | None:
    """The argv of the live process named in ``pidfile``, or None."""
    try:
        pid = int(pidfile.read_text().strip())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if not raw:
        return None
    return tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def stop(pidfile: Path, timeout: float = 3.0) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if running(pidfile) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pidfile) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if running(pidfile) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


def start(argv: Sequence[str], pidfile: Path, log: Path) -> int:
    """Start ``argv`` in its own session (it outlives the agent and its SSH session)."""
    stop(pidfile)
    proc = run.spawn(argv, log, hint="check the installation")
    pidfile.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pidfile)
    time.sleep(0.05)
    rc = proc.poll()
    if rc is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise KernelError(
            f"the resolver exited at once ({rc}): {tail[0] if tail else ''}",
            f"see {log}",
        )
    return proc.pid
