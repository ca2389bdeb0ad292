"""Run a function in a forked child inside fresh network and mount namespaces (as root).

The child unshares its network and mount namespaces (it is single-threaded right after the
fork, as the mount namespace needs), mounts a private tmpfs on /run (wireguard-go's UAPI
sockets and vpcctl's logs stay out of the host's /run), brings ``lo`` up and calls ``fn``. When
``fn`` returns or fails, every link it left is deleted and every process in its namespace is
killed, so nothing outlives it; the child's namespace then disappears with the child. The
parent gets ``None`` or the failure's traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _netns_inode(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _enter_sandbox() -> None:
    _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWNS), "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(b"sandbox", b"/run", b"tmpfs", 0, b"mode=0755"), "mount tmpfs /run")
    Path("/run/wireguard").mkdir(mode=0o755)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)


def _clean_sandbox() -> None:
    """Delete every link but lo (wireguard-go exits with its tun), then kill what is left in
    this network namespace (only processes this child started live in it)."""
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                          timeout=10, check=False)  # fmt: skip
    for line in done.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10,
                           check=False)  # fmt: skip
    mine, me = _netns_inode(), os.getpid()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        others = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != me:
                with contextlib.suppress(OSError):
                    if _netns_inode(entry) == mine:
                        others.append(int(entry))
        if not others:
            return
        for pid in others:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def run_in_sandbox(fn: Callable[[], None], timeout: float = 60.0) -> str | None:
    """``fn()`` in a forked child in its own namespaces: None if it passed, else a traceback."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        exit_code = 1
        try:
            os.close(read)
            _enter_sandbox()
            try:
                fn()
                exit_code = 0
            finally:
                _clean_sandbox()
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
                return f"the sandboxed child did not finish within {timeout:g} s"
    text = b"".join(chunks).decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return text or f"the sandboxed child exited with {code}"
