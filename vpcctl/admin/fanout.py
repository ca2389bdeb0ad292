"""The admin side: fan out over hosts, in parallel, with per-host results.

Every remote action goes through a :class:`~vpcctl.admin.transport.Transport` made by a ``connect``
function that is passed in (SSH for real, fakes in tests).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpcctl import __version__
from vpcctl.admin.render import render_all
from vpcctl.admin.transport import Completed, Transport
from vpcctl.core.errors import AgentError as AgentError
from vpcctl.core.errors import ExitCode, VpcctlError
from vpcctl.core.model import Host, Inventory
from vpcctl.core.spec import Encoder

FRESH_HANDSHAKE = 180.0  # seconds: WireGuard re-handshakes every 2 minutes on a live tunnel

Connect = Callable[[Host], Transport]


@dataclass
class HostResult:
    host: str
    ok: bool = False
    changed: bool = False
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "ok": self.ok,
            "changed": self.changed,
            "changes": self.changes,
            "error": self.error,
            "hint": self.hint,
            "seconds": round(self.seconds, 3),
        }
        out.update(self.data)
        return out


def agent_argv(host: Host, *args: str) -> list[str]:
    return [*shlex.split(host.agent or "vpcctl"), *args]


NO_JSON_HINT = "is the agent command right? (`vpcctl host set NAME --agent PATH`)"


def _json(host: Host, done: Completed, what: str) -> dict[str, Any]:
    """The agent's JSON object, or an AgentError that says what came instead (a failure with
    its error line, no JSON at all, JSON of the wrong shape)."""
    if done.rc == 0 and not done.stdout.lstrip().startswith(("{", "[")):
        raise AgentError(
            f"{host.name}: {what} printed no JSON: {_sample(done.stdout)}", NO_JSON_HINT
        )
    if done.rc != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        message = next((ln[len("error: ") :] for ln in lines if ln.startswith("error: ")), None)
        hint = next((ln[len("hint: ") :] for ln in lines if ln.startswith("hint: ")), None)
        if done.rc == 127 or ("not found" in done.stderr and not message):
            raise AgentError(
                f"{host.name}: vpcctl is not installed there ({agent_argv(host)[0]!r} not found)",
                f"run `vpcctl host bootstrap {host.name}`, or set the command with "
                f"`vpcctl host set {host.name} --agent PATH`",
            )
        said = message or (lines[-1] if lines else f"exit {done.rc}")
        if len(said) > 200:  # a host can print megabytes on one line: keep its end
            said = "..." + said[-200:]
        raise AgentError(f"{host.name}: {what} failed: {said}", hint[:300] if hint else None)
    try:
        data = json.loads(done.stdout)
    except (json.JSONDecodeError, RecursionError):
        raise AgentError(
            f"{host.name}: {what} printed no JSON: {_sample(done.stdout)}", NO_JSON_HINT
        ) from None
    return _object(host, what, data, "the answer")


def _sample(text: str) -> str:
    """A short, printable excerpt of what a host printed (it may be megabytes of anything)."""
    head = text.strip()[:120]
    more = f" ... ({len(text)} characters)" if len(text.strip()) > 120 else ""
    return (repr(head) if head else "nothing") + more


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _wrong(host: Host, what: str, where: str, value: object, wanted: str) -> AgentError:
    return AgentError(
        f"{host.name}: {what} answered JSON of the wrong shape: {where} is {_kind(value)}, "
        f"not {wanted}",
        f"is the agent command vpcctl {__version__}? (`vpcctl host bootstrap {host.name}`, "
        f"or `vpcctl host set {host.name} --agent PATH`)",
    )


def _object(host: Host, what: str, value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(host, what, where, value, "an object")
    return value


def _field(
    host: Host, what: str, obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
    default: Any = None,
) -> Any:  # fmt: skip
    """``obj[key]`` if it has the type ``kind`` (absent or null: ``default``)."""
    value = obj.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(_kind(k()) for k in kinds)
        raise _wrong(host, what, repr(key), value, wanted)
    return value


def _objects(host: Host, what: str, obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = _field(host, what, obj, key, list, [])
    return [_object(host, what, v, f"an item of {key!r}") for v in items]


def _change_texts(host: Host, what: str, data: dict[str, Any]) -> list[str]:
    return [
        str(_field(host, what, c, "text", str, "?")) for c in _objects(host, what, data, "changes")
    ]


def check_version(host: Host, t: Transport) -> str:
    """The agent's version on the host; refuses a missing or different one before any change."""
    done = t.run(agent_argv(host, "--version"))
    if done.rc != 0:
        raise AgentError(
            f"{host.name}: vpcctl agent not found ({' '.join(agent_argv(host))} --version: "
            f"{(done.stderr.strip().splitlines() or [f'exit {done.rc}'])[-1][-200:]})",
            f"install it with `vpcctl host bootstrap {host.name}` (installs vpcctl {__version__} "
            f"there), or set the command with `vpcctl host set {host.name} --agent PATH`",
        )
    found = done.stdout.strip().split()[-1] if done.stdout.strip() else "?"
    if found != __version__:
        raise AgentError(
            f"{host.name}: agent is vpcctl {found}, this is vpcctl {__version__}; nothing changed",
            f"run `vpcctl host bootstrap {host.name}` to install {__version__} there",
        )
    return found


class Interrupted(VpcctlError):
    """Ctrl-C while hosts were being worked on: what is known of each (``results``: the hosts
    that finished; ``running``: started and abandoned; ``waiting``: never started)."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, results: list[HostResult], running: list[str], waiting: list[str]):
        parts = [f"{r.host} {'ok' if r.ok else 'failed'}" for r in results]
        parts += [f"{n} unknown (abandoned while running: stopped there, rolled back unless it "
                  "had finished)" for n in running]  # fmt: skip
        parts += [f"{n} not started (unchanged)" for n in waiting]
        super().__init__(
            "interrupted: " + "; ".join(parts),
            "run the same command again: it converges what is left" if running or waiting else None,
        )
        self.results = results
        self.running = running
        self.waiting = waiting


def _register(
    lock: threading.Lock, running: dict[int, Transport | None], index: int, t: Transport
) -> None:
    with lock:
        running[index] = t


def _one(
    host: Host,
    connect: Connect,
    work: Callable[[Host, Transport], HostResult],
    register: Callable[[Transport], None],
    on_start: Callable[[str], None] | None,
    on_done: Callable[[HostResult], None] | None,
) -> HostResult:
    """One host's run: whatever goes wrong is that host's result, and its transport is closed."""
    started = time.monotonic()
    if on_start:
        on_start(host.name)
    t: Transport | None = None
    try:
        t = connect(host)
        register(t)
        result = work(host, t)
    except VpcctlError as exc:
        result = HostResult(host.name, ok=False, error=exc.message, hint=exc.hint)
    except Exception as exc:  # a host's answer must never become a traceback
        result = HostResult(
            host.name, ok=False, error=f"{host.name}: unexpected answer ({exc!r})"[:300],
            hint="is the agent command right? (`vpcctl host set NAME --agent PATH`)",
        )  # fmt: skip
    finally:
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()
    result.seconds = time.monotonic() - started
    if on_done:
        on_done(result)
    return result


def for_each(
    hosts: Sequence[Host],
    connect: Connect,
    work: Callable[[Host, Transport], HostResult],
    *,
    parallel: int = 16,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[HostResult], None] | None = None,
) -> list[HostResult]:
    """Run ``work`` on every host, ``parallel`` at a time; one host's failure is its own.

    Anything a host answers, however wrong, is that host's failure (never a traceback). The
    first Ctrl-C stops waiting: the transports of running hosts are closed (which ends their
    remote commands) and :class:`Interrupted` says what is known of every host."""
    lock = threading.Lock()
    pending = list(enumerate(hosts))
    results: dict[int, HostResult] = {}
    running: dict[int, Transport | None] = {}
    all_done = threading.Event()
    if not pending:
        return []

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                index, host = pending.pop(0)
                running[index] = None
            result = _one(
                host, connect, work, functools.partial(_register, lock, running, index),
                on_start, on_done,
            )  # fmt: skip
            with lock:
                running.pop(index, None)
                results[index] = result
                if len(results) == len(hosts):
                    all_done.set()

    for _ in range(min(max(1, parallel), len(hosts))):
        # daemon threads: an abandoned host must not keep the process alive after Ctrl-C
        threading.Thread(target=worker, name="vpcctl-host", daemon=True).start()
    try:
        while not all_done.wait(0.2):
            pass
    except KeyboardInterrupt:
        with lock:
            abandoned = dict(running)
            never = [h.name for _i, h in pending]
            pending.clear()
            finished = [results[i] for i in sorted(results)]
        for t in abandoned.values():
            if t is not None:
                with contextlib.suppress(Exception):
                    t.close()
        raise Interrupted(finished, [hosts[i].name for i in sorted(abandoned)], never) from None
    return [results[i] for i in range(len(hosts))]


def select(inv: Inventory, names: Iterable[str]) -> list[Host]:
    from vpcctl.core.errors import NotFoundError

    wanted = list(names)
    for n in wanted:
        if n not in inv.hosts:
            raise NotFoundError(f"no host named {n!r}", "see `vpcctl host ls`")
    chosen = wanted or sorted(inv.hosts)
    return [inv.hosts[n] for n in chosen]


def specs_json(inv: Inventory) -> dict[str, str]:
    enc = Encoder()
    return {name: enc.dumps(spec, compact=True) for name, spec in render_all(inv).items()}


def _agent_apply(
    host: Host, t: Transport, spec_text: str, *extra: str, timeout: float | None = None
) -> dict[str, Any]:
    """One round trip: the agent checks its own version, stores the spec (atomically, 0600) and
    applies it. An agent too old to know --expect-version is caught by the version check."""
    argv = agent_argv(
        host, "agent", "apply", "-", "--json", "--expect-version", __version__, *extra
    )
    done = t.run(argv, input=spec_text, timeout=timeout)  # None: --timeout (the transport's own)
    try:
        return _json(host, done, "agent apply")
    except AgentError:
        if done.rc not in (0, 1):  # usage error, not found, garbage: is it the wrong agent?
            check_version(host, t)
        raise


def up_one(
    host: Host, t: Transport, spec_text: str, *extra: str, timeout: float | None = None
) -> HostResult:
    """`agent apply --save` (spec.json in the agent's state directory); ``extra`` arguments
    (`--confirm SECONDS --token T`): the armed revert's record is ``data["confirm"]``."""
    data = _agent_apply(host, t, spec_text, "--save", *extra, timeout=timeout)
    result = HostResult(
        host.name,
        ok=True,
        changed=bool(_field(host, "agent apply", data, "changed", bool, False)),
        changes=_change_texts(host, "agent apply", data),
    )
    armed = _field(host, "agent apply", data, "confirm", dict)
    if armed is not None:
        result.data["confirm"] = armed
    return result


def plan_one(host: Host, t: Transport, spec_text: str) -> HostResult:
    data = _agent_apply(host, t, spec_text, "--dry-run")
    changes = _change_texts(host, "agent apply --dry-run", data)
    return HostResult(host.name, ok=True, changed=bool(changes), changes=changes)


def status_one(host: Host, t: Transport) -> HostResult:
    version = check_version(host, t)
    data = _json(host, t.run(agent_argv(host, "agent", "status", "--json")), "agent status")
    now = time.time()
    peers = []
    what = "agent status"
    for p in _objects(host, what, data, "peers"):
        hs = _field(host, what, p, "latest_handshake", (int, float))
        age = now - hs if hs else None
        peers.append(
            {
                "name": _field(host, what, p, "name", str),
                "public_key": _field(host, what, p, "public_key", str),
                "endpoint": _field(host, what, p, "endpoint", str),
                "handshake_age": round(age, 1) if age is not None else None,
                "fresh": age is not None and age < FRESH_HANDSHAKE,
                "rx_bytes": _field(host, what, p, "rx_bytes", int),
                "tx_bytes": _field(host, what, p, "tx_bytes", int),
            }
        )
    return HostResult(
        host.name,
        ok=True,
        data={
            "reachable": True,
            "version": version,
            "applied": _field(host, what, data, "applied", bool),
            "peers": peers,
        },
    )


def table_one(host: Host, t: Transport) -> HostResult:
    """The host's merged live table (`agent table --json`): every running container it knows.
    ``data["table"]`` is the validated :class:`~vpcctl.admin.views.Table`."""
    from vpcctl.admin.views import parse_table
    from vpcctl.core.errors import ValidationError

    done = t.run(agent_argv(host, "agent", "table", "--json"), timeout=60)
    if done.rc == 2 and "invalid choice" in done.stderr:
        raise AgentError(
            f"{host.name}: its agent has no live table (vpcctl there predates `agent table`)",
            f"run `vpcctl host bootstrap {host.name}` to install vpcctl {__version__} there",
        )
    raw = _json(host, done, "agent table")
    try:
        table = parse_table(host.name, raw)
    except ValidationError as exc:
        raise AgentError(
            exc.message, "is that host's vpcctl the same version as this one?"
        ) from None
    return HostResult(host.name, ok=True, data={"table": table})


def check_one(host: Host, t: Transport) -> HostResult:
    """Pre-flight of `join`: agent version, root/sudo, WireGuard, nftables; then keygen."""
    check_version(host, t)
    info = _json(host, t.run(agent_argv(host, "agent", "check", "--json")), "agent check")
    problems = _objects(host, "agent check", info, "problems")
    if problems:
        first = problems[0]
        message = _field(host, "agent check", first, "message", str, "a problem")
        raise AgentError(f"{host.name}: {message}", _field(host, "agent check", first, "hint", str))
    _field(host, "agent check", info, "wireguard", str)
    key = _json(host, t.run(agent_argv(host, "agent", "keygen", "--json")), "agent keygen")
    public = _field(host, "agent keygen", key, "public_key", str)
    if public is None:
        raise _wrong(host, "agent keygen", "'public_key'", None, "a string")
    return HostResult(
        host.name, ok=True, changed=bool(_field(host, "agent keygen", key, "created", bool)),
        data={"public_key": public, "check": info},
    )  # fmt: skip


def matrix(results: Sequence[HostResult], inv: Inventory) -> dict[str, dict[str, bool]]:
    """Which pairs have a fresh handshake (either side saw one in the last 3 minutes)."""
    names = sorted(inv.hosts)
    by_key = {h.public_key: h.name for h in inv.hosts.values() if h.public_key}
    fresh: set[tuple[str, str]] = set()
    for r in results:
        for p in r.data.get("peers", []):
            other = p.get("name") or by_key.get(p.get("public_key"))
            if other and p.get("fresh"):
                fresh.add((r.host, other))
                fresh.add((other, r.host))
    return {a: {b: (a, b) in fresh for b in names if b != a} for a in names}


def down_one(host: Host, t: Transport, *, forget_key: bool = False) -> HostResult:
    """`agent down` on the host: everything vpcctl owns there removed (the key too with
    ``forget_key``); the changes it made, Docker networks first."""
    what = "agent down"
    argv = agent_argv(host, "agent", "down", "--json", *(["--forget-key"] if forget_key else []))
    done = t.run(argv)
    try:
        data = _json(host, done, what)
    except AgentError:
        if done.rc not in (0, 1):  # usage error (an agent without --forget-key), not found
            check_version(host, t)
        raise
    docker = _object(host, what, data.get("docker") or {}, "'docker'")
    nets = [f"remove Docker network {n}" for n in _field(host, what, docker, "removed", list, [])]
    changes = nets + [
        str(_field(host, what, c, "text", str, "?")) for c in _objects(host, what, data, "removed")
    ]
    return HostResult(host.name, ok=True, changed=bool(changes), changes=changes,
                      data={"key": _field(host, what, data, "key", str)})  # fmt: skip
