"""The agent's state directory: the single place a host keeps vpcctl's secrets and history.

``private.key``    the WireGuard private key (0600, born here, never leaves)
``private.key.next`` the next key during `vpcctl host rotate-key` (0600)
``psk.json``       the preshared keys of this host's pairs (0600, never leave the pair)
``applied.json``   the last HostSpec applied successfully (what rollback returns to)
``firewall.json``  digests of the nftables table as generated and as listed after loading
``zone.json``      the resolver's zone
``fingerprint``    a digest of the host's vpcctl state after the last apply (fingerprint.py)
``live.json``      the agent daemon's merged live table (every reachable host's endpoints)
``mesh.json``      the agent daemon's status (peers: reachable, last seen, version, records)
``endpoints.json`` this host's endpoints for hosts without Docker (StaticDiscovery)
``daemon.pid``     the agent daemon's pid (``daemon.log`` its log)
``spec.json``      the HostSpec `vpcctl up` pushed last (``agent apply --save``)
``confirm.json``   a confirmed apply waiting for `agent confirm` (what it reverts to, when)
``confirm-last.json`` how the last confirmed apply ended (confirmed or reverted, its token)
``revert.pid``     the process that reverts an unconfirmed apply (``revert.log`` its log)
``sysctl.json``    each sysctl's value before vpcctl first changed it (`agent down` restores it)
``.agent.lock``    held while an apply runs

Kept free of heavy imports: the no-change fast path of `agent apply` only needs this, spec.py
and fingerprint.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpcctl.core.errors import ApplyError, SpecError, VpcctlError
from vpcctl.core.keys import write_secret
from vpcctl.core.model import DEFAULT_STATE_DIR, RESOLVER_STATS_FILE, STATE_DIR_ENV, ZONE_FILE
from vpcctl.core.spec import HostSpec, from_json

if TYPE_CHECKING:
    from vpcctl.host.plan import FirewallRecord

KEY_FILE = "private.key"


@dataclass(frozen=True)
class StateDir:
    path: Path

    @classmethod
    def default(cls, explicit: Path | None = None) -> StateDir:
        if explicit is not None:
            return cls(explicit)
        env = os.environ.get(STATE_DIR_ENV)
        return cls(Path(env) if env else DEFAULT_STATE_DIR)

    def key(self, name: str = KEY_FILE) -> Path:
        return self.path / name

    def next_key(self, name: str = KEY_FILE) -> Path:
        """The key `agent keygen --rotate` made, until an apply expecting it takes it."""
        return self.path / f"{name}.next"

    @property
    def psk(self) -> Path:
        return self.path / "psk.json"

    @property
    def applied(self) -> Path:
        return self.path / "applied.json"

    @property
    def firewall(self) -> Path:
        return self.path / "firewall.json"

    @property
    def zone(self) -> Path:
        return self.path / ZONE_FILE

    @property
    def resolver_pid(self) -> Path:
        return self.path / "resolver.pid"

    @property
    def resolver_log(self) -> Path:
        return self.path / "resolver.log"

    @property
    def live(self) -> Path:
        return self.path / "live.json"

    @property
    def mesh_status(self) -> Path:
        return self.path / "mesh.json"

    @property
    def static_endpoints(self) -> Path:
        return self.path / "endpoints.json"

    @property
    def daemon_pid(self) -> Path:
        return self.path / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.path / "daemon.log"

    @property
    def confirm(self) -> Path:
        return self.path / "confirm.json"

    @property
    def confirm_last(self) -> Path:
        return self.path / "confirm-last.json"

    @property
    def revert_pid(self) -> Path:
        return self.path / "revert.pid"

    @property
    def revert_log(self) -> Path:
        return self.path / "revert.log"

    @property
    def resolver_stats(self) -> Path:
        """UDP queries by result, written by the resolver beside its zone (the metrics read it)."""
        return self.path / RESOLVER_STATS_FILE

    @property
    def apply_stats(self) -> Path:
        """Counts and durations of the applies that changed something (the metrics read it)."""
        return self.path / "apply-stats.json"

    @property
    def fingerprint(self) -> Path:
        return self.path / "fingerprint"

    @property
    def spec(self) -> Path:
        """Where `vpcctl up` has the agent store the HostSpec it pushed (`apply --save`)."""
        return self.path / "spec.json"

    @property
    def sysctls(self) -> Path:
        """The sysctls vpcctl changed, with the value each had before its first change."""
        return self.path / "sysctl.json"

    def sysctls_before(self) -> dict[str, str]:
        """``{sysctl: value before vpcctl}``; empty when vpcctl changed none (or the record is
        unreadable: then there is nothing known to restore)."""
        try:
            data = json.loads(self.read(self.sysctls) or "{}")
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def record_sysctl(self, name: str, value: str) -> None:
        """Record ``name``'s value before vpcctl's first change of it (a later change keeps the
        first record: that is the host's own value)."""
        have = self.sysctls_before()
        if name not in have:
            self.write(self.sysctls, json.dumps({**have, name: value}, indent=2) + "\n")

    def written(self) -> list[Path]:
        """Every file the agent writes here, the key and the lock aside (``endpoints.json`` is
        the operator's input, not the agent's)."""
        return [self.applied, self.firewall, self.zone, self.resolver_pid, self.resolver_log,
                self.live, self.mesh_status, self.daemon_pid, self.daemon_log, self.fingerprint,
                self.spec, self.sysctls, self.apply_stats, self.resolver_stats, self.confirm,
                self.confirm_last, self.revert_pid, self.revert_log]  # fmt: skip

    def forget(self, *, keys: tuple[str, ...] = ()) -> list[str]:
        """Teardown: remove every file the agent wrote (and the key files named in ``keys``,
        for `agent down --forget-key`), plus temp files a killed writer left. Returns the names
        removed."""
        gone = []
        targets = [*self.written(), *(self.key(k) for k in keys)]
        names = {p.name for p in targets}
        with contextlib.suppress(FileNotFoundError):  # `.NAME.PID.tmp` of a writer killed mid-way
            targets += [Path(e.path) for e in os.scandir(self.path)
                        if e.name.endswith(".tmp") and e.name[1:-4].rsplit(".", 1)[0] in names
                        and e.name.startswith(".")]  # fmt: skip
        for path in targets:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone.append(path.name)
        return gone

    def discard(self) -> bool:
        """After `agent down --forget-key` (the lock released): remove the lock file and the
        directory when nothing else is in it. False when something else is (it all stays)."""
        with contextlib.suppress(FileNotFoundError):
            if {e.name for e in os.scandir(self.path)} - {".agent.lock"}:
                return False
            with contextlib.suppress(FileNotFoundError):
                (self.path / ".agent.lock").unlink()
            with contextlib.suppress(OSError):  # someone wrote a file meanwhile: it stays
                self.path.rmdir()
        return True

    def save_spec(self, text: str, path: Path | None = None) -> None:
        """Store the spec as given (atomically, 0600) at ``path``, by default :attr:`spec`."""
        if path is None:
            self.write(self.spec, text)
        else:
            write_secret(path, text.encode("utf-8"))

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write(self, path: Path, text: str) -> None:
        """State files are written like secrets: 0600 from birth, atomically."""
        self.ensure()
        write_secret(path, text.encode("utf-8"))

    def applied_spec(self) -> HostSpec | None:
        text = self.read(self.applied)
        if text is None:
            return None
        try:
            return from_json(text, str(self.applied))
        except SpecError:
            return None

    def firewall_record(self) -> FirewallRecord | None:
        from vpcctl.host.plan import FirewallRecord

        text = self.read(self.firewall)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return FirewallRecord(desired=str(data["desired"]), listing=str(data["listing"]))
        except (ValueError, KeyError, TypeError):
            return None

    @contextlib.contextmanager
    def locked(self, wait: float = 60.0) -> Iterator[None]:
        from vpcctl.core.lock import locked

        self.ensure()
        with locked(self.path / "agent", wait, what="this host (another agent apply runs)"):
            yield


def as_error(exc: BaseException, state: StateDir) -> VpcctlError:
    """Any exception as a one-line VpcctlError naming what failed (a path, for OSError) with a
    hint; vpcctl's own errors as they are."""
    if isinstance(exc, VpcctlError):
        return exc
    if isinstance(exc, OSError):
        where = exc.filename or state.path
        what = f"{where}: {exc.strerror or exc}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ApplyError(what, f"free space on the file system of {state.path} (df -h "
                                    f"{state.path}), then apply again")  # fmt: skip
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return ApplyError(what, f"{state.path} must be writable by the agent (root)")
        return ApplyError(what, "fix that, then apply again")
    return ApplyError(f"{type(exc).__name__}: {exc}", "this is a bug in vpcctl; please report it")


def result_json(
    host: str, changes: list[dict[str, Any]], applied: int, dry_run: bool, seconds: float
) -> dict[str, Any]:
    """What `agent apply --json` prints (one shape for the fast path and the full path)."""
    return {
        "host": host,
        "changed": bool(applied),
        "dry_run": dry_run,
        "up_to_date": not changes,
        "changes": changes,
        "applied": applied,
        "seconds": round(seconds, 3),
    }


def quick_files(spec: HostSpec, state: StateDir) -> list[Path]:
    """State files whose content is part of the fingerprint (the key by hash only)."""
    return [state.key(spec.private_key_file), state.zone, state.firewall, state.resolver_pid,
            state.psk]  # fmt: skip


def pidfiles(state: StateDir) -> list[Path]:
    """The processes the agent keeps running (the fast path notices one that died)."""
    return [state.resolver_pid, state.daemon_pid]


def host_as_recorded(spec: HostSpec, state: StateDir) -> bool:
    """The host's vpcctl state is exactly as the last apply left it (its fingerprint)."""
    seen = state.read(state.fingerprint)
    if seen is None:
        return False
    from vpcctl.host import fingerprint

    return fingerprint.fingerprint(spec, quick_files(spec, state), pidfiles(state)) == seen.strip()


def record_fingerprint(spec: HostSpec, state: StateDir) -> None:
    from vpcctl.host import fingerprint

    fp = fingerprint.fingerprint(spec, quick_files(spec, state), pidfiles(state))
    if fp is not None:
        state.write(state.fingerprint, fp + "\n")


def unchanged(spec: HostSpec, spec_text: str, state: StateDir) -> bool:
    """The fast path: same spec as last applied, and the host as the last apply left it."""
    return state.read(state.applied) == spec_text and host_as_recorded(spec, state)


def only_names_changed(spec_text: str, state: StateDir) -> bool:
    """The new spec differs from the applied one in its DNS zone only (a container added or
    removed, no service changed): nothing in the kernel changes, only the zone file."""
    applied = state.read(state.applied)
    if applied is None:
        return False
    try:
        old, new = json.loads(applied), json.loads(spec_text)
    except ValueError:
        return False
    old.pop("dns", None)
    new.pop("dns", None)
    return bool(old == new)


def read_apply_stats(state: StateDir) -> dict[str, float]:
    """``applies``, ``failures``, ``seconds_sum``, ``last_seconds``, ``last_failure`` (a time);
    zeros when nothing was recorded or the file is unreadable."""
    stats = {"applies": 0.0, "failures": 0.0, "seconds_sum": 0.0, "last_seconds": 0.0,
             "last_failure": 0.0}  # fmt: skip
    try:
        raw = json.loads(state.read(state.apply_stats) or "{}")
    except ValueError:
        return stats
    if isinstance(raw, dict):
        for k in stats:
            v = raw.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                stats[k] = float(v)
    return stats


def record_apply(state: StateDir, seconds: float, *, ok: bool) -> None:
    """Count one apply that was not a no-change fast path (best effort: never fails an apply)."""
    import time

    s = read_apply_stats(state)
    s["applies"] += 1
    s["seconds_sum"] += seconds
    s["last_seconds"] = seconds
    if not ok:
        s["failures"] += 1
        s["last_failure"] = time.time()
    with contextlib.suppress(OSError):
        state.write(state.apply_stats, json.dumps(s) + "\n")
