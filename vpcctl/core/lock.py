"""An exclusive lock through a sidecar file (flock), shared by the admin side (the inventory, the
mesh during `up`) and each host (its state directory during an apply)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vpcctl.core.errors import LockError


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, wait: float = 30.0, what: str = "the inventory") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through a sidecar ``.vpc.toml.lock`` file, since the
    inventory itself is replaced by rename). Waits up to ``wait`` seconds."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise LockError(
            f"{lock}: cannot open lock file ({exc})",
            "check that the directory exists and is writable",
        ) from None
    try:
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"{path}: another vpcctl is working on {what} (waited {wait:g} s)",
                        "wait for it to finish, or raise --wait",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)
