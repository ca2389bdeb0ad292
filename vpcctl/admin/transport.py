"""How the admin side reaches a host: the Transport protocol.

fanout.py talks only to this protocol; ssh.py implements it with paramiko.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vpcctl.core.errors import HostKeyError, TransportError

__all__ = ["Completed", "HostKeyError", "Transport", "TransportError", "put_command"]


@dataclass(frozen=True)
class Completed:
    rc: int
    stdout: str
    stderr: str


class Transport(Protocol):
    target: str

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None
    ) -> Completed:
        """Run ``argv`` on the host; at most ``timeout`` seconds (None: the transport's own
        command timeout, `--timeout`), after which the command is ended on the host too and
        TransportError raised."""
        ...

    def put(self, path: str, data: bytes, *, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


def put_command(path: str) -> list[str]:
    """A command that stores stdin at ``path`` atomically with mode 0600 from birth."""
    directory = path.rsplit("/", 1)[0] or "/"
    tmp = f"{path}.tmp.$$"
    script = (
        f"umask 077 && mkdir -p {shlex.quote(directory)} && cat > {tmp} "
        f"&& mv -f {tmp} {shlex.quote(path)}"
    )
    return ["sh", "-c", script]
