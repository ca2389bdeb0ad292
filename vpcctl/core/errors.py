"""One error hierarchy and the exit codes (see README "Exit codes").

Every failure a user can fix is a :class:`VpcctlError` with a one-line message and a hint that
says what to do next. The CLI turns them into exit codes in exactly one place (``cli/app.py``; ``cli/agent.py`` for the
lean agent front-end, with the same messages and codes).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CHANGES = 3
    PARTIAL = 4
    INTERRUPTED = 130


class VpcctlError(Exception):
    """A user-fixable error: one line of message, one line of hint."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(VpcctlError):
    """The command line itself is wrong: conflicting or missing options, a bad number."""

    exit_code = ExitCode.USAGE


class InventoryError(VpcctlError):
    """The inventory file is missing, unreadable or invalid."""


class ValidationError(InventoryError):
    """A value in the inventory or on the command line is not valid."""


class NotFoundError(VpcctlError):
    """A named object does not exist."""


class AllocationError(VpcctlError):
    """An address could not be allocated (range exhausted, taken, out of range)."""


class LockError(VpcctlError):
    """Another vpcctl process holds the lock."""


class KeyFileError(VpcctlError):
    """A key file is missing, malformed or has unsafe permissions."""


class KernelError(VpcctlError):
    """A netlink / nftables / WireGuard operation failed on this host."""


class ApplyError(VpcctlError):
    """Applying a plan failed (after rollback)."""


class SpecError(VpcctlError):
    """A HostSpec could not be read or is invalid."""


class ProgramError(KernelError):
    """A program vpcctl runs on this machine (core/run.py) is missing, could not start or did
    not finish in time."""


class TransportError(VpcctlError):
    """The host could not be reached or a command could not be run there."""


class HostKeyError(TransportError):
    """The host's SSH key is unknown (and not accepted) or has changed."""


class AgentError(VpcctlError):
    """The agent on a host is missing, of another version, or failed."""


class BootstrapError(VpcctlError):
    """vpcctl could not be installed on a host."""
