"""The agent daemon (`vpcctl agent run`): this host's endpoints, every peer's, and their consumers.

One long-running process per host (README "Mesh table"):

* reads the last applied HostSpec from the state directory and reloads it when `agent apply`
  writes a new one;
* runs a :class:`~vpcctl.host.discovery.Discovery` (:func:`choose_discovery`: Docker's Engine
  API when dockerd answers, otherwise ``endpoints.json`` in the state directory) and keeps this
  host's :class:`~vpcctl.core.endpoints.EndpointSet` (boot id + counter);
* serves it on the mesh address and watches every peer's (:mod:`vpcctl.host.mesh`), dropping a
  peer's records once it has not been heard from for longer than the grace;
* on every change of the merged table: writes ``live.json``, the resolver's zone (declared names
  plus discovered ones; the resolver reloads it by itself), replaces the DNAT backends of the
  services in one nft transaction, and deletes the conntrack entries of removed backends (TCP and
  UDP) so clients move on. It writes under the agent's state lock, so it never interleaves with
  an `agent apply`; apply reads ``live.json`` and writes the same zone and backends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from vpcctl.core.endpoints import Endpoint
from vpcctl.core.errors import VpcctlError
from vpcctl.core.spec import HostSpec, PeerSpec
from vpcctl.host import firewall, live, mesh
from vpcctl.host.discovery import Discovery, StaticDiscovery
from vpcctl.host.state import StateDir

log = logging.getLogger("vpcctl.daemon")

SPEC_POLL = 0.5  # seconds between looks at applied.json
STATUS_EVERY = 2.0  # seconds between status writes when nothing changes
DEBOUNCE = 0.02  # a burst of changes is consumed once

Backends = dict[tuple[str, str], tuple[IPv4Address, ...]]
DiscoveryFactory = Callable[[HostSpec, StateDir], Discovery]
Conntrack = Callable[[list[tuple[IPv4Address, IPv4Address]]], int]


def choose_discovery(spec: HostSpec, state: StateDir) -> Discovery:
    """Where this host's endpoints come from: the static file ``endpoints.json`` when the state
    directory has one (an explicit choice: hosts without a runtime, tests), else Docker's Engine
    API on a Docker host (:func:`vpcctl.host.docker.discovery_for`, which also recreates the
    Docker networks whenever dockerd (re)appears), else the static file (nothing until it is
    written)."""
    if not state.static_endpoints.exists():
        from vpcctl.host import docker

        found = docker.discovery_for(spec, state)
        if found is not None:
            return found
    return StaticDiscovery(state.static_endpoints, spec.host)


def delete_conntrack(pairs: list[tuple[IPv4Address, IPv4Address]]) -> int:
    from vpcctl.host.netlink import delete_conntrack as delete

    return delete(pairs)


@dataclass
class Counters:
    own_rejected: int = 0
    consumed: int = 0
    nft_updates: int = 0
    nft_errors: int = 0
    conntrack_deleted: int = 0
    zone_writes: int = 0
    last_error: str | None = None
    clashes: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        state: StateDir,
        *,
        discovery: DiscoveryFactory = choose_discovery,
        nft: firewall.Nft | None = None,
        conntrack: Conntrack = delete_conntrack,
    ) -> None:
        self.state = state
        self.discovery_factory = discovery
        self.nft = nft or firewall.Nft()
        self.conntrack = conntrack
        self.stop = threading.Event()
        self.kick = threading.Event()
        self.limiter = mesh.RateLimitedLog()
        self.counters = Counters()
        self.boot = secrets.token_hex(6)
        self.spec: HostSpec | None = None
        self.spec_stamp: tuple[int, int] | None = None
        self.publisher: mesh.Publisher | None = None
        self.table: mesh.Table | None = None
        self.server: mesh.Server | None = None
        self.watchers: dict[str, mesh.Watcher] = {}
        self.discovery_stop = threading.Event()
        self.pushed: Backends | None = None
        self.live_written: str | None = None
        self.started = time.time()
        self.metrics: tuple[str, Any] | None = None  # (where, server) once serving

    # -- spec ------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.state.applied.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def _load_spec(self) -> bool:
        """Reload applied.json when it changed; True when a (new) spec is in force."""
        stamp = self._stamp()
        if stamp == self.spec_stamp:
            return False
        spec = self.state.applied_spec()
        self.spec_stamp = stamp
        if spec is None or spec == self.spec:
            return False
        old, self.spec = self.spec, spec
        log.info("HostSpec %s: host %s, %d peers, port %d, grace %d s",
                 "loaded" if old is None else "reloaded", spec.host, len(spec.peers),
                 spec.daemon.port, spec.daemon.grace)  # fmt: skip
        self._configure(old, spec)
        return True

    def _configure(self, old: HostSpec | None, spec: HostSpec) -> None:
        if self.publisher is None:
            self.publisher = mesh.Publisher(spec.host, self.boot)
            self.table = mesh.Table(float(spec.daemon.grace), self.kick.set)
        assert self.table is not None
        self.table.grace = float(spec.daemon.grace)
        own = spec.address.ip
        if (self.server is None or self.server.address != own
                or self.server.port != spec.daemon.port):  # fmt: skip
            if self.server is not None:
                self.server.stop.set()
            self.server = mesh.Server(self.publisher, own, spec.daemon.port, threading.Event(),
                                      self.limiter)  # fmt: skip
            self.server.set_allowed(spec.peers)
            threading.Thread(target=self.server.serve, daemon=True, name="mesh-server").start()
        self.server.set_allowed(spec.peers)
        self.table.set_peers(spec.peers)
        wanted: dict[str, PeerSpec] = {p.name: p for p in spec.peers}
        for name in list(self.watchers):
            w = self.watchers[name]
            p = wanted.get(name)
            if p is None or p != w.peer or w.own != own or w.port != spec.daemon.port:
                w.close()
                del self.watchers[name]
        for name, p in wanted.items():
            if name not in self.watchers:
                w = mesh.Watcher(p, own, spec.daemon.port, self.table,
                                 lambda: mesh.known_vpcs(self.spec) if self.spec else frozenset(),
                                 self.limiter)  # fmt: skip
                self.watchers[name] = w
                w.start()
        if old is None:
            discovery = self.discovery_factory(spec, self.state)
            log.info("discovery: %s", type(discovery).__name__)
            threading.Thread(target=self._discover, args=(discovery,), daemon=True,
                             name="discovery").start()  # fmt: skip
        self.pushed = None  # services may have changed: push every backend set again
        self.kick.set()

    # -- this host's endpoints -------------------------------------------------------------
    def _discover(self, discovery: Discovery) -> None:
        while not self.stop.is_set():
            try:
                discovery.run(self.publish_local, self.discovery_stop)
                return
            except Exception as exc:  # a runtime hiccup must not end the daemon: retry
                self.limiter.warn("discovery", "error", f"discovery failed: {exc!r}; retrying")
                self.stop.wait(1.0)

    def publish_local(self, endpoints: tuple[Endpoint, ...]) -> None:
        spec = self.spec
        if spec is None or self.publisher is None:
            return
        slices, vpcs = mesh.own_slices(spec), mesh.known_vpcs(spec)
        good, bad = mesh.check_set(
            [live.endpoint_to_json(e) for e in endpoints], spec.host, slices, vpcs
        )
        for reason in bad:
            self.limiter.warn("self", reason.kind, f"not announcing a local endpoint: {reason}")
        self.counters.own_rejected += len(bad)
        if self.publisher.publish(good):
            self.kick.set()

    # -- consumers -------------------------------------------------------------------------
    def merged(self) -> tuple[Endpoint, ...]:
        own = self.publisher.current.endpoints if self.publisher else ()
        peers = self.table.live() if self.table else ()
        return (*own, *peers)

    def consume(self) -> None:
        spec = self.spec
        if spec is None:
            return
        endpoints = self.merged()
        text = live.live_text(endpoints)
        if text != self.live_written:
            self.state.write(self.state.live, text)
            self.live_written = text
        zone, clashes = live.merged_zone(spec, endpoints)
        if list(clashes) != self.counters.clashes:
            for c in clashes:
                log.warning("zone: %s", c)
            self.counters.clashes = list(clashes)
        from vpcctl.core.spec import zone_file_text

        zone_text, _names = zone_file_text(zone)
        backends = live.backends(spec, endpoints)
        with self.state.locked(wait=30):
            if self.state.read(self.state.zone) != zone_text:
                self.state.write(self.state.zone, zone_text)
                self.counters.zone_writes += 1
            if backends != self.pushed:
                self._push(spec, backends)
        self.counters.consumed += 1

    def _push(self, spec: HostSpec, backends: Backends) -> None:
        script = firewall.backends_script(spec, backends)
        if script:
            try:
                self.nft.run_script(script)
            except VpcctlError as exc:
                self.counters.nft_errors += 1
                self.counters.last_error = exc.message
                self.limiter.warn("nft", "error", f"could not replace service backends: "
                                  f"{exc.message} (the next apply loads them)")  # fmt: skip
                return
            self.counters.nft_updates += 1
            listing = self.nft.list_table()
            self.state.write(
                self.state.firewall,
                json.dumps({"desired": firewall.digest(firewall.ruleset(spec, backends)),
                            "listing": firewall.digest(listing or "")}, indent=2) + "\n",
            )  # fmt: skip
        old = self.pushed or {}
        vip = {(s.vpc, s.name): s.vip for s in spec.services}
        removed = [
            (vip[key], b)
            for key, was in old.items()
            if key in vip
            for b in was
            if b not in backends.get(key, ())
        ]
        self.pushed = dict(backends)
        if removed:
            try:
                n = self.conntrack(removed)
            except VpcctlError as exc:
                self.limiter.warn("conntrack", "error", f"conntrack cleanup failed: {exc.message}")
            else:
                self.counters.conntrack_deleted += n
                log.info("removed backends %s: %d conntrack entries deleted",
                         ", ".join(f"{v}->{b}" for v, b in removed), n)  # fmt: skip

    # -- metrics ---------------------------------------------------------------------------
    def metrics_source(self) -> tuple[HostSpec | None, dict[tuple[str, str], int], list[Any]]:
        backends = {k: len(v) for k, v in (self.pushed or {}).items()}
        return self.spec, backends, self.table.to_json() if self.table else []

    def _metrics(self) -> None:
        """Serve the metrics where the spec says (``[mesh] metrics``), moving or stopping the
        endpoint when that changes; a failed bind is retried at the next status write."""
        want = self.spec.daemon.metrics if self.spec else None
        if self.metrics is not None and self.metrics[0] != want:
            self.metrics[1].shutdown()
            self.metrics[1].server_close()
            self.metrics = None
        if want is None or self.metrics is not None or self.spec is None:
            return
        from vpcctl.host import metrics

        host, _, port = want.rpartition(":")
        address = str(self.spec.address.ip) if host == "mesh" else host
        try:
            server = metrics.serve(address, int(port), self.state, self.metrics_source)
        except OSError as exc:
            self.limiter.warn("metrics", "bind", f"cannot serve metrics on {address}:{port}: "
                              f"{exc.strerror} (retrying)")  # fmt: skip
            return
        log.info("metrics on http://%s:%s/metrics", address, port)
        self.metrics = (want, server)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        spec = self.spec
        own = self.publisher.current if self.publisher else None
        stats = self.server.stats if self.server else None
        return {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "host": spec.host if spec else None,
            "address": str(spec.address.ip) if spec else None,
            "port": spec.daemon.port if spec else None,
            "grace": spec.daemon.grace if spec else None,
            "version": f"{own.boot}:{own.counter}" if own else None,
            "own": [live.endpoint_to_json(e) for e in own.endpoints] if own else [],
            "peers": self.table.to_json() if self.table else [],
            "server": {
                "accepted": stats.accepted,
                "refused": stats.refused,
                "dropped_slow": stats.dropped_slow,
                "watchers": sum(stats.active.values()),
            }
            if stats
            else None,
            "counters": {
                "own_rejected": self.counters.own_rejected,
                "nft_updates": self.counters.nft_updates,
                "nft_errors": self.counters.nft_errors,
                "conntrack_deleted": self.counters.conntrack_deleted,
                "zone_writes": self.counters.zone_writes,
                "last_error": self.counters.last_error,
            },
            "clashes": self.counters.clashes,
        }

    def write_status(self) -> None:
        self.state.write(self.state.mesh_status, json.dumps(self.status(), indent=2) + "\n")

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> None:
        self.state.ensure()
        self.state.write(self.state.daemon_pid, f"{os.getpid()}\n")
        waiting_logged = False
        next_status = 0.0
        try:
            while not self.stop.is_set():
                self._load_spec()
                if self.spec is None:
                    if not waiting_logged:
                        log.info("waiting for a HostSpec (%s)", self.state.applied)
                        waiting_logged = True
                    self.stop.wait(SPEC_POLL)
                    continue
                assert self.table is not None
                self.table.expire()
                if self.kick.wait(SPEC_POLL):
                    self.stop.wait(DEBOUNCE)
                    self.kick.clear()
                    try:
                        self.consume()
                    except VpcctlError as exc:
                        self.counters.last_error = exc.message
                        self.limiter.warn("consume", "error", f"{exc.message}; retrying")
                        self.kick.set()
                        self.stop.wait(0.5)
                    next_status = 0.0
                if time.monotonic() >= next_status:
                    self._metrics()
                    self.write_status()
                    next_status = time.monotonic() + STATUS_EVERY
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.discovery_stop.set()
        mesh.close_all(self.watchers.values())
        if self.server is not None:
            self.server.stop.set()
        if self.metrics is not None:
            self.metrics[1].shutdown()
            self.metrics[1].server_close()
        with contextlib.suppress(OSError, ValueError):
            if int(self.state.daemon_pid.read_text().strip()) == os.getpid():
                self.state.daemon_pid.unlink()
        with contextlib.suppress(OSError):
            self.state.mesh_status.unlink()
