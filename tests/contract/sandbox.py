"""Run a function inside a lab host (tests/lab/harness.py) from this very process.

A forked child joins the host's network and mount namespaces (``setns``; the child is
single-threaded right after the fork, as joining a mount namespace needs) and calls ``fn``
there: real netlink, nft, /proc/sys and wireguard-go against the host's private /run. The parent
gets ``None`` or the failure's traceback. The Lab keeps the namespaces alive and, at close, kills
whatever ``fn`` started in them (wireguard-go) and deletes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import time
import traceback
from collections.abc import Callable

from tests.lab.harness import LabHost

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_host(host: LabHost, fn: Callable[[], None], timeout: float = 60.0) -> str | None:
    """``fn()`` in a forked child inside ``host``: None if it passed, else a traceback."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        exit_code = 1
        try:
            os.close(read)
            _setns(f"/proc/{host.pid}/ns/net", CLONE_NEWNET)
            _setns(f"/proc/{host.pid}/ns/mnt", CLONE_NEWNS)
            os.chdir(host.dir)
            fn()
            exit_code = 0
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(exit_code)
    os.close(write)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    status: int | None = None
    with os.fdopen(read, "rb", buffering=0) as pipe:
        eof = False
        while status is None or not eof:
            if status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                status = st if done else None
            if not eof and select.select([pipe], [], [], 0.05)[0]:
                chunk = pipe.read(65536)
                chunks.append(chunk)
                eof = not chunk
            elif eof:
                time.sleep(0.02)
            if time.monotonic() > deadline:
                if status is not None:
                    break  # exited; something it started still holds the pipe
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return f"the child in {host.name} did not finish within {timeout:g} s"
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return b"".join(chunks).decode(errors="replace") or f"the child exited with {code}"
