"""How the admin side reaches a host: the Transport protocol, and a local implementation.

push.py talks only to this protocol; ssh.py implements it with paramiko, tests use
:class:`LocalTransport` (or fakes with the same methods) for failure injection.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vpcctl.errors import VpcctlError


class TransportError(VpcctlError):
    """The host could not be reached or a command could not be run there."""


class HostKeyError(TransportError):
    """The host's SSH key is unknown (and not accepted) or has changed."""


@dataclass(frozen=True)
class Completed:
    rc: int
    stdout: str
    stderr: str


class Transport(Protocol):
    target: str

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 120.0
    ) -> Completed: ...

    def put(self, path: str, data: bytes, *, timeout: float = 60.0) -> None: ...

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


class LocalTransport:
    """Runs on this machine (the admin host itself, or tests)."""

    def __init__(self, target: str = "localhost", prefix: Sequence[str] = ()) -> None:
        self.target = target
        self.prefix = list(prefix)

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 120.0
    ) -> Completed:
        try:
            done = subprocess.run(
                [*self.prefix, *argv],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransportError(
                f"{self.target}: command timed out after {timeout:g} s", "raise --timeout"
            ) from None
        except OSError as exc:
            raise TransportError(
                f"{self.target}: cannot run {argv[0]}: {exc.strerror}", None
            ) from None
        return Completed(done.returncode, done.stdout, done.stderr)

    def put(self, path: str, data: bytes, *, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [*self.prefix, *put_command(path)], input=data, capture_output=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise TransportError(
                f"{self.target}: cannot write {path}: {done.stderr.decode(errors='replace').strip()}",
                "check permissions (root or sudo)",
            )

    def close(self) -> None:
        pass
