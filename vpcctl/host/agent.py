"""The host agent: observe -> plan -> apply, with rollback. Runs on each host, as root.

State directory (default ``/etc/vpcctl``, ``--state-dir`` or ``$VPCCTL_STATE_DIR``) is the single
place a host keeps vpcctl's secrets and history:

``private.key``    the WireGuard private key (0600, born here, never leaves)
``applied.json``   the last HostSpec applied successfully (what rollback returns to)
``firewall.json``  digests of the nftables table as generated and as listed after loading
``zone.json``      the resolver's zone (names of the VPCs this host serves)
``sysctl.json``    each sysctl's value before vpcctl first changed it (`agent down` restores it)
``.lock``          held while an apply runs
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpcctl import __version__
from vpcctl.core.confirm import Pending
from vpcctl.core.errors import ApplyError, ExitCode, KeyFileError, VpcctlError
from vpcctl.core.keys import PrivateKey, ensure_private, load_private
from vpcctl.core.spec import HostSpec, to_json, wireguard_peers
from vpcctl.host import live
from vpcctl.host.linktypes import ALIAS_PREFIX, RTPROT_VPCCTL
from vpcctl.host.plans import MANAGED, Change, Plan
from vpcctl.host.state import (
    KEY_FILE,
    StateDir,
    as_error,
    host_as_recorded,
    only_names_changed,
    record_apply,
    record_fingerprint,
    result_json,
    unchanged,
)

FORWARDING_SYSCTL = "net.ipv4.ip_forward"

if TYPE_CHECKING:
    from vpcctl.host.kernel import System
    from vpcctl.host.plan import Desired, Observed

# The planner, the firewall builder and the kernel adapters are imported where they are used: the
# fast paths of `converge` (nothing changed; only names changed) must not pay for them.


def keygen(state: StateDir, *, rotate: bool = False) -> tuple[str, bool]:
    """Create the private key if missing; return (public key, created).

    ``rotate``: make the next key beside it (kept, and returned again, until an apply whose spec
    expects it takes it over); the current key stays in use until then."""
    state.ensure()
    if rotate:
        load_private(state.key())  # there is a current key to rotate away from
        key, created = ensure_private(state.next_key())
        return key.public_key(), created
    key, created = ensure_private(state.key())
    return key.public_key(), created


def check() -> dict[str, Any]:
    """Can this host run the agent: root, WireGuard (kernel or wireguard-go), nftables."""
    import os

    from vpcctl.core import run

    problems: list[dict[str, str]] = []
    root = os.geteuid() == 0
    if not root:
        problems.append({"message": "the agent must run as root",
                         "hint": "log in as root or give the login passwordless sudo"})  # fmt: skip
    kernel = False
    if root:
        from vpcctl.host.wireguard import kernel_has_wireguard

        kernel = kernel_has_wireguard()
    userspace = run.which("wireguard-go") is not None
    if not kernel and not userspace:
        problems.append(
            {
                "message": "no WireGuard: neither the kernel module nor wireguard-go",
                "hint": "modprobe wireguard (Linux >= 5.6), or apt-get install wireguard-go",
            }
        )
    nft = run.which("nft") is not None
    if not nft:
        problems.append({"message": "nft not found", "hint": "apt-get install nftables"})
    from vpcctl.host.dockersocket import docker_url, present

    docker = present()
    if docker and run.which("iptables") is None:
        problems.append({"message": "dockerd runs here but iptables is missing: vpcctl cannot "
                                    "let VPC traffic through Docker's FORWARD rules",
                         "hint": "apt-get install iptables"})  # fmt: skip
    return {
        "version": __version__,
        "root": root,
        "wireguard": "kernel" if kernel else ("userspace" if userspace else None),
        "nftables": nft,
        "docker": {"socket": docker_url(), "present": docker},
        "problems": problems,
    }


# ---------------------------------------------------------------------------------------------
# observe


def observe(system: System, spec: HostSpec | None, state: StateDir) -> Observed:
    from vpcctl.host import firewall
    from vpcctl.host.plan import Observed

    links = system.links()
    iface = links.get(spec.interface) if spec is not None else None
    if iface is not None and iface.kind in ("wireguard", "tun"):
        backend = "kernel" if iface.kind == "wireguard" else "userspace"
    elif spec is not None:
        backend = system.detect_backend()
    else:
        backend = "userspace"
    wg = system.wg_get(spec.interface, iface.kind) if spec is not None and iface else None
    listing = system.nft_list()
    endpoints: dict[str, str] = {}
    if spec is not None:
        for p in spec.peers:
            if p.endpoint and p.endpoint not in endpoints:
                endpoints[p.endpoint] = system.resolve_endpoint(p.endpoint)
    return Observed(
        backend=backend,
        links=links,
        routes=tuple(system.routes()),
        wg=wg,
        forwarding=system.forwarding(),
        firewall_listing=firewall.digest(listing) if listing is not None else None,
        firewall_record=state.firewall_record(),
        zone_text=state.read(state.zone),
        endpoints=endpoints,
        resolver=system.resolver_running(state.resolver_pid),
        daemon=system.resolver_running(state.daemon_pid),
        forwarding_before=_forwarding_before(state),
    )


def _forwarding_before(state: StateDir) -> bool | None:
    value = state.sysctls_before().get(FORWARDING_SYSCTL)
    return None if value is None else value.strip() == "1"


def desired_for(
    spec: HostSpec | None, key: PrivateKey | None, state: StateDir | None = None
) -> Desired:
    from vpcctl.host import firewall
    from vpcctl.host.plan import Desired

    if spec is None:
        return Desired(spec=None)
    # the agent daemon's live table (none without a daemon): the same zone and service backends
    # it keeps, so an apply never regresses them
    running = live.read_live(state) if state is not None else ()
    zone, names = live.zone_text(spec, running)
    resolver = None
    daemon = None
    if state is not None and spec.vpcs:
        from vpcctl.dns.resolver import listen_addresses, resolver_command

        resolver = tuple(resolver_command(listen_addresses(spec), zone_file=state.zone))
    if state is not None and spec.daemon.enabled:
        daemon = daemon_command(state)
    psks = {}
    if state is not None and spec.psk and key is not None:
        from vpcctl.host.psk import for_peers

        psks = for_peers(state, key.public_key(), [p.public_key for p in spec.peers])
    return Desired(
        spec=spec,
        public_key=key.public_key() if key else None,
        firewall=firewall.ruleset(spec, live.backends(spec, running)),
        zone=zone,
        zone_names=names,
        resolver=resolver,
        daemon=daemon,
        psks=psks,
    )


def daemon_command(state: StateDir) -> tuple[str, ...]:
    """The command line `agent apply` starts the agent daemon with."""
    import sys

    return (sys.executable, "-m", "vpcctl", "agent", "run", "--state-dir", str(state.path),
            MANAGED)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# apply


def _execute(change: Change, system: System, state: StateDir, key: PrivateKey | None) -> None:
    from vpcctl.host import changes as ch

    wireguard = (ch.CreateWireGuard, ch.SetPrivateKey, ch.SetListenPort, ch.SetPeer, ch.RemovePeer)
    files = (ch.LoadFirewall, ch.DeleteFirewall, ch.WriteZone, ch.StartResolver, ch.StopResolver,
             ch.StartDaemon, ch.StopDaemon)  # fmt: skip
    if isinstance(change, ch.SetForwarding):
        if not change.restore:  # the host's own value, recorded once before the first change
            state.record_sysctl(FORWARDING_SYSCTL, "1" if system.forwarding() else "0")
        system.set_forwarding(change.on)
    elif isinstance(change, wireguard):
        _execute_wireguard(change, system, key)
    elif isinstance(change, files):
        _execute_firewall_and_names(change, system, state)
    else:
        _execute_links_and_routes(change, system)


def _execute_wireguard(change: Change, system: System, key: PrivateKey | None) -> None:
    from vpcctl.host import changes as ch

    match change:
        case ch.CreateWireGuard(name=name, backend=backend, mtu=mtu, alias=alias):
            system.wg_create(name, backend, mtu, alias)
        case ch.SetPrivateKey(dev=dev):
            if key is None:
                raise KeyFileError("no private key", "run `vpcctl agent keygen`")
            system.wg_set_device(dev, private_key=key.raw)
        case ch.SetListenPort(dev=dev, port=port):
            system.wg_set_device(dev, listen_port=port)
        case ch.SetPeer(dev=dev, update=update):
            system.wg_update_peer(dev, update)
        case ch.RemovePeer(dev=dev, public_key=pk):
            system.wg_remove_peer(dev, pk)


def _execute_links_and_routes(change: Change, system: System) -> None:
    from vpcctl.host import changes as ch

    match change:
        case ch.CreateTunnel(name=name, local=local, mtu=mtu, alias=alias):
            system.add_ipip(name, local, mtu, alias)
        case ch.CreateBridge(name=name, mtu=mtu, alias=alias):
            system.add_bridge(name, mtu, alias)
        case ch.DeleteLink(name=name, kind=kind):
            system.delete_link(name, kind)
        case ch.SetLink(name=name, mtu=mtu, up=up):
            system.set_link(name, mtu=mtu, up=up)
        case ch.AddAddress(dev=dev, address=address):
            system.add_address(dev, address)
        case ch.DelAddress(dev=dev, address=address):
            system.del_address(dev, address)
        case ch.AddRoute(route=route):
            system.add_route(route)
        case ch.DelRoute(route=route):
            system.del_route(route)
        case _:
            raise ApplyError(f"unknown change {change!r}", "this is a bug in vpcctl")


def _execute_firewall_and_names(change: Change, system: System, state: StateDir) -> None:
    from vpcctl.host import changes as ch

    match change:
        case ch.LoadFirewall(digest=digest, text=text):
            from vpcctl.host import firewall

            system.nft_load(text)
            listing = system.nft_list()
            state.write(
                state.firewall,
                json.dumps({"desired": digest, "listing": firewall.digest(listing or "")}, indent=2)
                + "\n",
            )
        case ch.DeleteFirewall():
            system.nft_delete()
            with contextlib.suppress(FileNotFoundError):
                state.firewall.unlink()
        case ch.WriteZone(text=text):
            state.write(state.zone, text)
        case ch.StartResolver(argv=argv):
            system.start_resolver(argv, state.resolver_pid, state.resolver_log)
        case ch.StopResolver():
            system.stop_resolver(state.resolver_pid)
        case ch.StartDaemon(argv=argv):
            system.start_resolver(argv, state.daemon_pid, state.daemon_log)
        case ch.StopDaemon():
            system.stop_resolver(state.daemon_pid)


@dataclass
class Result:
    host: str
    plan: Plan
    applied: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    rolled_back: bool = False
    messages: list[str] = field(default_factory=list)
    zone_only: bool = False  # the names-only fast path: only the zone file was written
    docker: dict[str, Any] | None = None  # what the Docker step did (None: no Docker here)
    confirm: Pending | None = None  # a confirmed apply: the revert it armed (None: nothing)
    resolved: dict[str, Any] | None = None  # systemd-resolved registration (host/resolved.py)

    def to_json(self) -> dict[str, Any]:
        out = result_json(self.host, self.plan.to_json(), self.applied, self.dry_run, self.seconds)
        if self.docker is not None:
            out["docker"] = self.docker
        if self.confirm is not None:
            out["confirm"] = {"armed": True, **self.confirm.describe(time.time())}
        if self.resolved is not None:
            out["resolved"] = self.resolved
        return out


def _run(
    p: Plan,
    system: System,
    state: StateDir,
    key: PrivateKey | None,
    progress: Callable[[Change], None] | None,
) -> int:
    done = 0
    for change in p.changes:
        if progress:
            progress(change)
        _execute(change, system, state, key)
        done += 1
    return done


def apply(
    spec: HostSpec,
    system: System | None,
    state: StateDir,
    *,
    dry_run: bool = False,
    progress: Callable[[Change], None] | None = None,
    backend: str | None = None,
) -> Result:
    """Converge this host to ``spec`` (observe, plan, apply); on failure return it to the last
    applied state. ``system`` None means this Linux host (the kernel adapter is opened here and
    the fingerprint recorded after the apply); `converge` adds the fast paths in front."""
    started = time.monotonic()
    spec_text = to_json(spec)
    own = system is None
    if system is None:
        from vpcctl.host.kernel import LinuxSystem

        system = LinuxSystem(prefer_backend=backend)
    try:
        result = _apply(spec, spec_text, system, state, dry_run=dry_run, progress=progress)
    finally:
        if own:
            system.close()
    if own and not dry_run:
        from vpcctl.host import docker

        if docker.present():
            # after the bridges exist with their gateways: Docker adopts them (README "Docker")
            report = docker.ensure_networks(spec)
            result.docker = report.to_json()
            result.messages += report.lines()
        try:
            record_fingerprint(spec, state)
        except OSError:  # applied all the same; without a fingerprint the next apply looks closely
            with contextlib.suppress(OSError):
                state.fingerprint.unlink()
    result.seconds = time.monotonic() - started
    return result


def converge(
    spec: HostSpec,
    state: StateDir,
    *,
    dry_run: bool = False,
    progress: Callable[[Change], None] | None = None,
    backend: str | None = None,
    confirm: Confirm | None = None,
) -> Result:
    """What `vpcctl agent apply` does on this Linux host, cheapest way first:

    1. nothing changed: the spec is the one last applied and the host's fingerprint is as the
       last apply recorded it; nothing heavier than the fingerprint is loaded;
    2. only names changed (a container came or went): the host is as recorded and the spec
       differs in its DNS zone only, so only the zone file is written (the resolver reloads it);
    3. otherwise the full observe -> plan -> apply, under the state directory's lock.

    A dry run always takes the full path (without the lock), so it shows what `apply` sees.
    With ``confirm`` the apply is a confirmed one (host/confirm.py); without, an apply that
    would change something while one is pending is refused."""
    started = time.monotonic()
    if dry_run:
        return apply(spec, None, state, dry_run=True, backend=backend)
    spec_text = to_json(spec)
    if unchanged(spec, spec_text, state) and (confirm is None or not state.confirm.exists()):
        result = Result(host=spec.host, plan=Plan(()))
    else:
        with state.locked():
            try:
                result = _converge_locked(spec, spec_text, state, progress, backend, confirm)
            except VpcctlError:
                record_apply(state, time.monotonic() - started, ok=False)
                raise
            record_apply(state, time.monotonic() - started, ok=True)
    _register_names(result, spec)
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Confirm:
    """`agent apply --confirm SECONDS`: revert unless `agent confirm --token TOKEN` comes within
    SECONDS of the end of the apply; ``save`` the spec file `--save` writes."""

    token: str
    seconds: float
    save: Path | None = None


def _register_names(result: Result, spec: HostSpec) -> None:
    """Names on the host itself (systemd-resolved), asserted on every converge: resolved forgets
    a link's settings when the link is recreated (README "Names on the hosts themselves")."""
    from vpcctl.host import resolved

    result.resolved = resolved.ensure(spec)
    if result.resolved["mode"] == "systemd-resolved" and not result.resolved["registered"]:
        result.messages.append(f"warning: {result.resolved['summary']}")


def _converge_locked(
    spec: HostSpec,
    spec_text: str,
    state: StateDir,
    progress: Callable[[Change], None] | None,
    backend: str | None,
    confirm: Confirm | None,
) -> Result:
    """`converge` under the state lock: a confirmed apply (host/confirm.py), or a plain one
    (refused while one is pending, or for the spec just reverted)."""
    from vpcctl.host import confirm as confirmed

    def run() -> Result:
        if only_names_changed(spec_text, state) and host_as_recorded(spec, state):
            return _write_zone_only(spec, spec_text, state, progress)
        return apply(spec, None, state, progress=progress, backend=backend)

    if confirm is None:
        confirmed.refuse_while_pending(state, spec_text)
        return run()
    result, armed = confirmed.apply_confirmed(
        state, spec_text, confirm.token, confirm.seconds, confirm.save, run
    )
    result.confirm = armed
    return result


def _write_zone_only(
    spec: HostSpec, spec_text: str, state: StateDir, progress: Callable[[Change], None] | None
) -> Result:
    from vpcctl.host.changes import WriteZone

    zone, names = live.zone_text(spec, live.read_live(state))  # discovered names stay
    change = WriteZone(records=names, text=zone)
    if progress:
        progress(change)
    old = state.read(state.zone)
    try:
        state.write(state.zone, zone)
        state.write(state.applied, spec_text)
        record_fingerprint(spec, state)
    except Exception as exc:  # a full disk, say: put the old zone back
        err = as_error(exc, state)
        with contextlib.suppress(OSError):
            state.fingerprint.unlink()
        restored = "restored the previous zone"
        try:
            if old is not None:
                state.write(state.zone, old)
        except OSError:
            restored = "could not restore the previous zone"
        raise ApplyError(
            f"{change.describe()} failed: {err.message}; {restored}", err.hint
        ) from None
    return Result(host=spec.host, plan=Plan((change,)), applied=1, zone_only=True)


def _apply(
    spec: HostSpec,
    spec_text: str,
    system: System,
    state: StateDir,
    *,
    dry_run: bool,
    progress: Callable[[Change], None] | None,
) -> Result:
    from vpcctl.host.plan import plan

    key = _key_for(spec, state)
    desired = desired_for(spec, key, state)
    observed = observe(system, spec, state)
    p = plan(desired, observed)
    result = Result(host=spec.host, plan=p, dry_run=dry_run)
    if dry_run or p.empty:
        if not dry_run and state.read(state.applied) != spec_text:
            state.write(state.applied, spec_text)
        return result
    started: list[Change] = []

    def step(change: Change) -> None:
        started.append(change)
        if progress:
            progress(change)

    try:
        result.applied = _run(p, system, state, key, step)
        state.write(state.applied, spec_text)
    except Exception as exc:  # any failure (a full disk, a bug): the host goes back
        with contextlib.suppress(OSError):
            state.fingerprint.unlink()
        failed = started[-1] if started else None
        cause = as_error(exc, state)
        err = _rollback_error(spec, system, state, key, failed, cause)
        raise _interrupted_stays(err, cause) from None
    return result


def _interrupted_stays(err: ApplyError, cause: VpcctlError) -> ApplyError:
    """The rollback's error keeps the cause's exit code when it was an interruption (130)."""
    if cause.exit_code == ExitCode.INTERRUPTED:
        err.exit_code = ExitCode.INTERRUPTED
    return err


def _rollback_error(
    spec: HostSpec,
    system: System,
    state: StateDir,
    key: PrivateKey | None,
    failed: Change | None,
    exc: VpcctlError,
) -> ApplyError:
    from vpcctl.host.plan import Desired, plan

    what = failed.describe() if failed else "apply"
    prior = state.applied_spec()
    if prior is not None and prior.mesh != spec.mesh:
        prior = None
    target = "the previously applied state" if prior is not None else "the state before vpcctl"
    try:
        if prior is not None:
            back = plan(desired_for(prior, key, state), observe(system, prior, state))
        else:
            # first apply: remove exactly what this apply created (everything vpcctl owns)
            back = plan(Desired(spec=None), observe(system, None, state))
    except Exception as again:
        return ApplyError(
            f"{what} failed: {exc.message}; rollback to {target} could not be planned: "
            f"{as_error(again, state).message}",
            "inspect with `vpcctl agent status` and re-run the apply",
        )
    # best effort: one change that cannot be undone (a state file on a full disk) must not
    # leave the kernel objects after it in place
    failures: list[str] = []
    for change in back.changes:
        try:
            _execute(change, system, state, key)
        except Exception as again:
            failures.append(f"{change.describe()}: {as_error(again, state).message}")
    if failures:
        return ApplyError(
            f"{what} failed: {exc.message}; rollback to {target} also failed: {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
            exc.hint or "inspect with `vpcctl agent status` and re-run the apply",
        )
    return ApplyError(
        f"{what} failed: {exc.message}; restored {target} ({len(back.changes)} changes undone)",
        exc.hint,
    )


def _key_for(spec: HostSpec, state: StateDir) -> PrivateKey:
    path = state.key(spec.private_key_file)
    key = load_private(path)
    nxt = state.next_key(spec.private_key_file)
    if spec.public_key is not None and key.public_key() != spec.public_key and nxt.exists():
        new = load_private(nxt)
        if new.public_key() == spec.public_key:  # `host rotate-key`: the inventory has the next
            nxt.replace(path)  # the old key is gone once the spec that expects the new one runs
            return new
    if spec.public_key is not None and key.public_key() != spec.public_key:
        raise ApplyError(
            f"this host's key ({key.public_key()}) is not the one the inventory has for host "
            f"{spec.host} ({spec.public_key})",
            "wrong host? otherwise record this key with `vpcctl join` again",
        )
    return key


def down(
    system: System,
    state: StateDir,
    mesh: str | None = None,
    *,
    forget_key: bool = False,
    before_links: Callable[[], None] | None = None,
) -> Result:
    """Remove everything vpcctl owns on this host and nothing else: the agent daemon (first: it
    would rewrite what the rest removes), then ``before_links`` (Docker's networks, which sit on
    the bridges), the links, routes, firewall table and resolver, the sysctls back to their
    values before vpcctl, and the state files (the key only with ``forget_key``).

    Best effort: a change that fails does not stop the others; then the state files stay (the
    sysctl record is what a second `agent down` restores from) and the error lists what failed."""
    from vpcctl.host.changes import DeleteLink, StopDaemon
    from vpcctl.host.plan import Desired, alias_for, plan

    observed = observe(system, None, state)
    p = plan(Desired(spec=None), observed)
    if mesh is not None:
        mine = alias_for(mesh)
        p = Plan(
            tuple(
                c
                for c in p.changes
                if not isinstance(c, DeleteLink) or observed.links[c.name].alias == mine
            )
        )
    applied = state.applied_spec()
    keys = tuple(dict.fromkeys([KEY_FILE, *([applied.private_key_file] if applied else [])]))
    keys += (state.next_key().name, state.psk.name)  # the next key, the pairs' preshared keys
    first = [c for c in p.changes if isinstance(c, StopDaemon)]
    failures = _run_all(first, system, state)
    if before_links is not None:
        before_links()
    failures += _run_all([c for c in p.changes if c not in first], system, state)
    result = Result(host=applied.host if applied else "", plan=p,
                    applied=len(p.changes) - len(failures))  # fmt: skip
    if failures:
        raise ApplyError(
            f"teardown incomplete: {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
            + f"; {result.applied} of {len(p.changes)} changes done, state files kept",
            "fix that, then run `vpcctl agent down` again (it removes what is left)",
        )
    result.messages = [
        f"remove state file {n}" for n in state.forget(keys=keys if forget_key else ())
    ]
    return result


def _run_all(changes: Sequence[Change], system: System, state: StateDir) -> list[str]:
    """Execute every change, whatever fails; the failures as one line each."""
    failures = []
    for change in changes:
        try:
            _execute(change, system, state, None)
        except Exception as exc:  # teardown goes on; the caller reports what failed
            failures.append(f"{change.describe()}: {as_error(exc, state).message}")
    return failures


def mesh_status(system: System, state: StateDir) -> dict[str, Any]:
    """The agent daemon's mesh table (its own set, and per peer: reachable, last seen, version,
    record count), as the daemon last wrote it (every 2 s and on every change)."""
    argv = system.resolver_running(state.daemon_pid)
    if argv is None:
        return {"running": False}
    try:
        data = json.loads(state.read(state.mesh_status) or "{}")
    except ValueError:
        data = {}
    return {"running": True, "managed": MANAGED in argv, **data}


def status(system: System, state: StateDir) -> dict[str, Any]:
    """The observed state, as JSON-ready data."""
    spec = state.applied_spec()
    links = system.links()
    iface_name = spec.interface if spec else None
    iface = links.get(iface_name) if iface_name else None
    wg = system.wg_get(iface_name, iface.kind) if iface_name and iface else None
    names = {p.public_key: p.name for p in wireguard_peers(spec)} if spec else {}
    now = time.time()
    peers = []
    if wg is not None:
        for k in sorted(wg.peers):
            p = wg.peers[k]
            peers.append(
                {
                    "name": names.get(k),
                    "public_key": k,
                    "endpoint": p.endpoint,
                    "allowed_ips": [str(n) for n in p.allowed_ips],
                    "keepalive": p.keepalive,
                    "latest_handshake": p.last_handshake,
                    "handshake_age": round(now - p.last_handshake, 1) if p.last_handshake else None,
                    "rx_bytes": p.rx_bytes,
                    "tx_bytes": p.tx_bytes,
                }
            )
    resolver = system.resolver_running(state.resolver_pid)
    owned_links = {
        n: link for n, link in links.items() if link.alias and link.alias.startswith(ALIAS_PREFIX)
    }
    tunnel = spec.tunnel.name if spec and spec.tunnel else None
    return {
        "host": spec.host if spec else None,
        "mesh": spec.mesh if spec else None,
        "applied": spec is not None,
        "interface": (
            {
                "name": iface.name,
                "kind": iface.kind,
                "backend": wg.backend if wg else None,
                "up": iface.up,
                "mtu": iface.mtu,
                "addresses": [str(a) for a in iface.addresses],
                "public_key": wg.public_key if wg else None,
                "listen_port": wg.listen_port if wg else None,
            }
            if iface
            else None
        ),
        "peers": peers,
        "tunnel": (
            {
                "name": tunnel,
                "present": tunnel in links,
                "local": str(links[tunnel].ipip_local) if tunnel in links else None,
            }
            if tunnel
            else None
        ),
        "bridges": [
            {
                "name": n,
                "up": link.up,
                "mtu": link.mtu,
                "addresses": [str(a) for a in link.addresses],
            }
            for n, link in sorted(owned_links.items())
            if link.kind == "bridge"
        ],
        "routes": [
            {
                "dst": str(r.dst),
                "via": str(r.via) if r.via else None,
                "dev": r.dev,
                "onlink": r.onlink,
            }
            for r in system.routes()
            if r.proto == RTPROT_VPCCTL
        ],
        "forwarding": system.forwarding(),
        "resolver": {"running": resolver is not None, "argv": list(resolver or ())},
        "daemon": mesh_status(system, state),
        "firewall": {"table": "inet vpcctl", "present": system.nft_list() is not None},
    }
