"""The admin side: fan out over hosts, in parallel, with per-host results.

Every remote action goes through a :class:`~vpcctl.admin.transport.Transport` made by a ``connect``
function that is passed in (SSH for real, fakes in tests).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vpcctl import __version__
from vpcctl.admin.render import render_all
from vpcctl.admin.transport import Completed, Transport
from vpcctl.core.errors import VpcctlError
from vpcctl.core.model import Host, Inventory
from vpcctl.core.spec import Encoder

FRESH_HANDSHAKE = 180.0  # seconds: WireGuard re-handshakes every 2 minutes on a live tunnel

Connect = Callable[[Host], Transport]


class AgentError(VpcctlError):
    """The agent on a host is missing, of another version, or failed."""


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


def _json(host: Host, done: Completed, what: str) -> Any:
    if done.rc == 0 and not done.stdout.lstrip().startswith(("{", "[")):
        done = Completed(2, done.stdout, done.stderr)
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
        raise AgentError(
            f"{host.name}: {what} failed: {message or (lines[-1] if lines else f'exit {done.rc}')}",
            hint,
        )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AgentError(
            f"{host.name}: {what} printed no JSON: {done.stdout.strip()[:120]!r}",
            "is the agent command right? (`vpcctl host set NAME --agent PATH`)",
        ) from None


def check_version(host: Host, t: Transport) -> str:
    """The agent's version on the host; refuses a missing or different one before any change."""
    done = t.run(agent_argv(host, "--version"), timeout=30)
    if done.rc != 0:
        raise AgentError(
            f"{host.name}: vpcctl agent not found ({' '.join(agent_argv(host))} --version: "
            f"{(done.stderr.strip().splitlines() or [f'exit {done.rc}'])[-1]})",
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


def for_each(
    hosts: Sequence[Host],
    connect: Connect,
    work: Callable[[Host, Transport], HostResult],
    *,
    parallel: int = 16,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[HostResult], None] | None = None,
) -> list[HostResult]:
    """Run ``work`` on every host, ``parallel`` at a time; one host's failure is its own."""

    def one(host: Host) -> HostResult:
        started = time.monotonic()
        if on_start:
            on_start(host.name)
        t: Transport | None = None
        try:
            t = connect(host)
            result = work(host, t)
        except VpcctlError as exc:
            result = HostResult(host.name, ok=False, error=exc.message, hint=exc.hint)
        finally:
            if t is not None:
                t.close()
        result.seconds = time.monotonic() - started
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, hosts))


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


def _agent_apply(host: Host, t: Transport, spec_text: str, *extra: str) -> Any:
    """One round trip: the agent checks its own version, stores the spec (atomically, 0600) and
    applies it. An agent too old to know --expect-version is caught by the version check."""
    argv = agent_argv(
        host, "agent", "apply", "-", "--json", "--expect-version", __version__, *extra
    )
    done = t.run(argv, input=spec_text, timeout=300)
    try:
        return _json(host, done, "agent apply")
    except AgentError:
        if done.rc not in (0, 1):  # usage error, not found, garbage: is it the wrong agent?
            check_version(host, t)
        raise


def up_one(host: Host, t: Transport, spec_text: str) -> HostResult:
    data = _agent_apply(host, t, spec_text, "--save")  # spec.json in the agent's state directory
    return HostResult(
        host.name,
        ok=True,
        changed=bool(data.get("changed")),
        changes=[c["text"] for c in data.get("changes", [])],
    )


def plan_one(host: Host, t: Transport, spec_text: str) -> HostResult:
    data = _agent_apply(host, t, spec_text, "--dry-run")
    changes = [c["text"] for c in data.get("changes", [])]
    return HostResult(host.name, ok=True, changed=bool(changes), changes=changes)


def status_one(host: Host, t: Transport) -> HostResult:
    version = check_version(host, t)
    data = _json(host, t.run(agent_argv(host, "agent", "status", "--json")), "agent status")
    now = time.time()
    peers = []
    for p in data.get("peers", []):
        hs = p.get("latest_handshake")
        age = now - hs if hs else None
        peers.append(
            {
                "name": p.get("name"),
                "public_key": p.get("public_key"),
                "endpoint": p.get("endpoint"),
                "handshake_age": round(age, 1) if age is not None else None,
                "fresh": age is not None and age < FRESH_HANDSHAKE,
                "rx_bytes": p.get("rx_bytes"),
                "tx_bytes": p.get("tx_bytes"),
            }
        )
    return HostResult(
        host.name,
        ok=True,
        data={
            "reachable": True,
            "version": version,
            "applied": data.get("applied"),
            "peers": peers,
        },
    )


def check_one(host: Host, t: Transport) -> HostResult:
    """Pre-flight of `join`: agent version, root/sudo, WireGuard, nftables; then keygen."""
    check_version(host, t)
    info = _json(host, t.run(agent_argv(host, "agent", "check", "--json")), "agent check")
    problems = [p for p in info.get("problems", [])]
    if problems:
        raise AgentError(f"{host.name}: {problems[0]['message']}", problems[0].get("hint"))
    key = _json(host, t.run(agent_argv(host, "agent", "keygen", "--json")), "agent keygen")
    return HostResult(
        host.name, ok=True, changed=bool(key.get("created")),
        data={"public_key": key["public_key"], "check": info},
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
