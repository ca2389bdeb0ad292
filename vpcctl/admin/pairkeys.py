"""Carrying the hosts' preshared keys (issue 12): the admin side of ``psk = true``.

Before the apply of `vpcctl up` (and for `vpcctl rotate-psk`), every host that makes keys is asked
``agent psk offer``; each answer holds a pair's key sealed to the other host's WireGuard public key
(core.keys.seal), which only that host can open. The sealed bytes are kept in this process's memory
only, never written, logged or printed, and handed to the receiver's ``agent psk accept`` in the
same SSH connection as its apply. Which pairs exist and who makes each key: core.pairs (pure).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence

from vpcctl.admin import fanout
from vpcctl.admin.fanout import Connect, HostResult
from vpcctl.admin.transport import Transport
from vpcctl.core import pairs
from vpcctl.core.errors import AgentError
from vpcctl.core.model import Host, Inventory

Work = Callable[[Host, Transport], HostResult]


def _offer_one(
    host: Host, t: Transport, own: str, peers: Sequence[str], rotate: bool, out: dict[str, object]
) -> HostResult:
    argv = fanout.agent_argv(host, "agent", "psk", "offer", "--json", *(["--rotate"] * rotate))
    done = t.run(argv, input=json.dumps({"own": own, "peers": list(peers)}))
    data = fanout._json(host, done, "agent psk offer")
    sealed = data.get("sealed")
    if not isinstance(sealed, dict) or not all(isinstance(v, str) for v in sealed.values()):
        raise AgentError(f"{host.name}: agent psk offer answered no sealed keys", None)
    out[host.name] = sealed  # memory only: never in a result, a log or the output
    made = data.get("made")
    return HostResult(host.name, ok=True, changed=bool(made),
                      changes=[f"made {made} preshared keys"] if made else [])  # fmt: skip


def offer(
    inv: Inventory,
    names: Collection[str],
    connect: Connect,
    parallel: int,
    *,
    only: Collection[str] | None = None,
    rotate: bool = False,
) -> tuple[dict[str, dict[str, str]], list[HostResult]]:
    """Ask the generating hosts among ``names`` for their pairs with the others in ``names``
    (only those with a host of ``only``, when given). Returns the sealed keys by receiver and the
    hosts whose offer failed."""
    keys = {n: inv.hosts[n].public_key for n in names}
    asked = pairs.offers(keys, only)
    got: dict[str, object] = {}
    results = fanout.for_each(
        [inv.hosts[n] for n in asked], connect,
        lambda h, t: _offer_one(h, t, keys[h.name] or "", asked[h.name], rotate, got),
        parallel=parallel,
    )  # fmt: skip
    sealed = {n: v for n, v in got.items() if isinstance(v, dict)}
    return pairs.route(keys, sealed), [r for r in results if not r.ok]


def accept(host: Host, t: Transport, sealed: dict[str, str] | None) -> int:
    """Hand this host the keys sealed to it; returns how many it did not have yet."""
    if not sealed:
        return 0
    request = json.dumps({"own": host.public_key, "sealed": sealed})
    done = t.run(fanout.agent_argv(host, "agent", "psk", "accept", "--json"), input=request)
    data = fanout._json(host, done, "agent psk accept")
    changed = data.get("changed")
    return changed if isinstance(changed, int) else 0


def up_work(specs: dict[str, str], sealed: dict[str, dict[str, str]]) -> Work:
    """Per host: accept its sealed keys, then apply its spec, in one SSH connection."""

    def work(host: Host, t: Transport) -> HostResult:
        changed = accept(host, t, sealed.get(host.name))
        return _noted(fanout.up_one(host, t, specs[host.name]), changed)

    return work


def _noted(result: HostResult, changed: int) -> HostResult:
    if changed:
        result.changed = True
        result.changes.insert(0, f"stored {changed} preshared keys from peers")
    return result


class FirstThenAll:
    """`host rotate-key`: the others connect, take their keys and start following the first
    host's new key (``agent follow``: the new key beside the old one, swapped by the host itself
    at the first handshake from it); then the first host applies (switches to its new key); then
    the others apply, which finishes what following left. A host that fails to switch leaves the
    others unapplied. Hand ``fanout.for_each`` the first host first, with :meth:`connect` and
    :meth:`work`."""

    FOLLOW_WAIT = 60.0  # seconds the first host waits for the others to be following

    def __init__(
        self,
        first: Host,
        old_key: str,
        others: int,
        connect: Connect,
        specs: dict[str, str],
        sealed: dict[str, dict[str, str]],
    ) -> None:
        import threading

        self.first = first.name
        self.new_key = first.public_key or ""
        self.old_key = old_key
        self.others = others
        self._connect = connect
        self.specs = specs
        self.sealed = sealed
        self.done = threading.Event()
        self.ready = threading.Condition()
        self.readied = 0
        self.first_ok = False

    def _readied(self) -> None:
        with self.ready:
            self.readied += 1
            self.ready.notify_all()

    def connect(self, host: Host) -> Transport:
        try:
            return self._connect(host)
        except BaseException:
            if host.name == self.first:
                self.done.set()
            else:
                self._readied()
            raise

    def work(self, host: Host, t: Transport) -> HostResult:
        if host.name == self.first:
            with self.ready:
                self.ready.wait_for(lambda: self.readied >= self.others, self.FOLLOW_WAIT)
            try:
                changed = accept(host, t, self.sealed.get(host.name))
                result = fanout.up_one(host, t, self.specs[host.name])
                self.first_ok = True
            finally:
                self.done.set()
            return _noted(result, changed)
        try:
            changed = accept(host, t, self.sealed.get(host.name))
            argv = ["agent", "follow", self.new_key, "--old", self.old_key, "--json"]
            fanout._json(host, t.run(fanout.agent_argv(host, *argv)), "agent follow")
        finally:
            self._readied()
        self.done.wait()
        if not self.first_ok:
            raise AgentError(
                f"{host.name}: not applied: {self.first} did not take its new key",
                f"fix {self.first} (see its row) and run the same command again",
            )
        return _noted(fanout.up_one(host, t, self.specs[host.name]), changed)


def merge(results: list[HostResult], failed: list[HostResult]) -> list[HostResult]:
    """A host whose offer failed is failed, whatever its apply did (its pairs lack keys)."""
    bad = {r.host: r for r in failed}
    return [bad.get(r.host, r) if r.ok else r for r in results]
