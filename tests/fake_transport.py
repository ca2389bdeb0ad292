"""A fake of the admin side's :class:`~vpcctl.admin.transport.Transport`: hosts that answer
from a script, for tests of fan-out and the SSH commands without root, sshd or a network.

A :class:`FakeNet` holds one :class:`FakeHost` per inventory host name; ``net.connect`` has the
``Connect`` signature (``Host -> Transport``) and is passed in where SSH would be (``fanout``'s
``connect`` argument, or ``State(connect=net.connect)`` as the CLI's root object). A host with no
script behaves like a healthy agent of this vpcctl version; its script overrides any command::

    net = FakeNet({"nas": FakeHost(), "vps1": FakeHost(answers={"agent apply": timeout()})})
    net["vps2"] = FakeHost(refuse=host_key_changed("root@198.51.100.20"))

Answers are matched on the agent's subcommand: ``--version``, ``agent apply``, ``agent status``,
``agent check``, ``agent keygen``, ``agent down``, ``agent confirm`` (or ``sh`` for a shell
script such as bootstrap's); an answer is a :class:`Reply`, a list of them (one per call, the
last one repeated), or a function of the :class:`Call`. Every call and every ``put`` is
recorded, and whether each transport was closed.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpcctl import __version__
from vpcctl.admin.transport import Completed, HostKeyError, Transport, TransportError
from vpcctl.core.model import Host
from vpcctl.host.state import result_json


@dataclass(frozen=True)
class Reply:
    """What one command answers: exit code and output, or a transport error raised instead."""

    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    raises: TransportError | None = None


@dataclass(frozen=True)
class Call:
    host: str
    argv: tuple[str, ...]
    input: str | None
    timeout: float | None  # None: the transport's own (SSH: --timeout)

    @property
    def verb(self) -> str:
        return verb_of(self.argv)

    def has(self, *flags: str) -> bool:
        return all(f in self.argv for f in flags)

    def option(self, flag: str) -> str | None:
        if flag not in self.argv:
            return None
        i = self.argv.index(flag)
        return self.argv[i + 1] if i + 1 < len(self.argv) else None


Answer = Reply | Sequence[Reply] | Callable[[Call], Reply]


def verb_of(argv: Sequence[str]) -> str:
    """``--version``, ``agent apply``, ... of an agent command line (whatever its prefix)."""
    args = list(argv)
    if "--version" in args and "agent" not in args:
        return "--version"
    if "agent" in args:
        i = args.index("agent")
        return " ".join(args[i : i + 2])
    return args[0] if args else ""


# answers --------------------------------------------------------------------------------------


def agent_json(data: Any, rc: int = 0) -> Reply:
    """The agent printed ``data`` as JSON (as ``--json`` does)."""
    return Reply(rc, json.dumps(data, indent=2) + "\n", "")


def agent_error(message: str, hint: str | None = None, rc: int = 1) -> Reply:
    """The agent failed through its error boundary: ``error: ...`` and ``hint: ...`` on stderr."""
    return Reply(rc, "", f"error: {message}\n" + (f"hint: {hint}\n" if hint else ""))


def not_installed(command: str = "vpcctl") -> Reply:
    """The login shell found no such command (what sh says, exit 127)."""
    return Reply(127, "", f"sh: 1: {command}: not found\n")


def garbage(text: str = "Welcome to BusyBox!\nlogin banner\n", rc: int = 0) -> Reply:
    """Output that is not the agent's JSON (a wrong agent command, a noisy profile)."""
    return Reply(rc, text, "")


def timeout(target: str = "host", seconds: float = 300.0) -> Reply:
    """The command did not finish in time: the TransportError SshTransport raises."""
    return Reply(
        raises=TransportError(
            f"{target}: command timed out after {seconds:g} s", "raise --timeout, or check the host"
        )
    )


def unreachable(target: str, address: str = "198.51.100.99:22") -> TransportError:
    """Connecting failed: what SshTransport raises when nothing answers."""
    return TransportError(
        f"{target}: cannot connect to {address}: Connection refused",
        "is sshd running there, and the address right?",
    )


def host_key_unknown(target: str) -> HostKeyError:
    return HostKeyError(
        f"{target}: unknown SSH host key ssh-ed25519 SHA256:fake",
        "check the fingerprint on the host, then re-run with --accept-new to record it",
    )


def host_key_changed(target: str) -> HostKeyError:
    return HostKeyError(
        f"{target}: SSH HOST KEY CHANGED: got ssh-ed25519 SHA256:new, expected ssh-ed25519 "
        "SHA256:old; nothing was sent",
        "if the host was reinstalled, verify the new fingerprint and remove the old line",
    )


# hosts ----------------------------------------------------------------------------------------


@dataclass
class FakeHost:
    """One host: a healthy agent of ``version`` unless ``answers`` says otherwise.

    ``changes`` are what its ``agent apply`` (and ``--dry-run``) reports; ``peers`` what
    ``agent status`` lists; ``refuse`` makes connecting raise (unreachable, host key)."""

    version: str = __version__
    answers: dict[str, Answer] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    peers: list[dict[str, Any]] = field(default_factory=list)
    public_key: str = "cHVibGljLWtleS1vZi10aGUtZmFrZS1ob3N0LTAwMDA="
    key_created: bool = True
    wireguard: str | None = "kernel"
    problems: list[dict[str, str]] = field(default_factory=list)
    torn_down: list[str] = field(default_factory=lambda: ["delete wireguard vpc0"])  # agent down
    refuse: TransportError | None = None
    calls: list[Call] = field(default_factory=list)
    puts: dict[str, bytes] = field(default_factory=dict)

    def answer(self, call: Call) -> Reply:
        scripted = self.answers.get(call.verb)
        if scripted is not None:
            return _pick(scripted, call, sum(c.verb == call.verb for c in self.calls))
        return self.default(call)

    def default(self, call: Call) -> Reply:
        """What a healthy agent of ``self.version`` prints (the real agent's shapes)."""
        name = call.host
        if call.verb == "--version":
            return Reply(0, f"vpcctl {self.version}\n", "")
        if call.verb == "agent apply":
            expected = call.option("--expect-version")
            if expected is not None and expected != self.version:
                return agent_error(
                    f"agent is vpcctl {self.version}, the admin runs vpcctl {expected}; "
                    "nothing changed",
                    f"install vpcctl {expected} here (`vpcctl host bootstrap NAME` from the admin)",
                )
            dry = call.has("--dry-run")
            changes = [{"op": "Fake", "text": t} for t in self.changes]
            applied = 0 if dry else len(changes)
            out = result_json(name, changes, applied, dry, 0.01)
            seconds = call.option("--confirm")
            if seconds is not None and changes:  # a confirmed apply arms a revert
                out["confirm"] = {"armed": True, "pending": True, "token": call.option("--token"),
                                  "seconds": float(seconds), "seconds_left": float(seconds)}  # fmt: skip
            return agent_json(out)
        if call.verb == "agent confirm":
            return agent_json({"confirmed": True, "outcome": "confirmed",
                               "token": call.option("--token"), "message": "confirmed"})  # fmt: skip
        if call.verb == "agent status":
            return agent_json({"host": name, "applied": True, "peers": self.peers})
        if call.verb == "agent check":
            return agent_json(
                {"version": self.version, "root": True, "wireguard": self.wireguard,
                 "nftables": True, "problems": self.problems},
                rc=1 if self.problems else 0,
            )  # fmt: skip
        if call.verb == "agent keygen":
            return agent_json(
                {"public_key": self.public_key, "created": self.key_created,
                 "key_file": "/etc/vpcctl/private.key"}
            )  # fmt: skip
        if call.verb == "agent down":
            return agent_json(
                {"removed": [{"op": "DeleteLink", "text": t} for t in self.torn_down],
                 "docker": {"present": False, "removed": []}, "files": ["applied.json"],
                 "key": "removed" if call.has("--forget-key") else "kept"}
            )  # fmt: skip
        return Reply(127, "", f"sh: 1: {shlex.join(call.argv)[:40]}: not scripted in FakeHost\n")


def _pick(answer: Answer, call: Call, earlier: int) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if callable(answer):
        return answer(call)
    replies = list(answer)
    return replies[min(earlier, len(replies) - 1)]


class FakeTransport:
    """Implements :class:`~vpcctl.admin.transport.Transport` over one :class:`FakeHost`."""

    def __init__(self, name: str, target: str, host: FakeHost, lock: threading.Lock) -> None:
        self.name = name
        self.target = target
        self.host = host
        self.closed = False
        self._lock = lock

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None
    ) -> Completed:
        if self.closed:
            raise TransportError(f"{self.target}: SSH connection closed", "retry")
        call = Call(self.name, tuple(argv), input, timeout)
        with self._lock:
            reply = self.host.answer(call)
            self.host.calls.append(call)
        if reply.raises is not None:
            raise reply.raises
        return Completed(reply.rc, reply.stdout, reply.stderr)

    def put(self, path: str, data: bytes, *, timeout: float | None = None) -> None:
        if self.closed:
            raise TransportError(f"{self.target}: SSH connection closed", "retry")
        with self._lock:
            self.host.puts[path] = data

    def close(self) -> None:
        self.closed = True


class FakeNet:
    """The fake hosts by name; :meth:`connect` is the ``Connect`` function to pass in."""

    def __init__(self, hosts: Mapping[str, FakeHost] | None = None) -> None:
        self.hosts: dict[str, FakeHost] = dict(hosts or {})
        self.transports: list[FakeTransport] = []
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> FakeHost:
        return self.hosts[name]

    def __setitem__(self, name: str, host: FakeHost) -> None:
        self.hosts[name] = host

    def connect(self, host: Host) -> Transport:
        with self._lock:
            fake = self.hosts.setdefault(host.name, FakeHost())
        if fake.refuse is not None:
            raise fake.refuse
        t = FakeTransport(host.name, str(host.ssh), fake, self._lock)
        with self._lock:
            self.transports.append(t)
        return t

    def calls(self, name: str, verb: str | None = None) -> list[Call]:
        return [c for c in self.hosts[name].calls if verb is None or c.verb == verb]

    @property
    def all_closed(self) -> bool:
        return all(t.closed for t in self.transports)
