"""Network-namespace test lab for vpcctl (see /work/shared/LAB.md, sections 1 and 2).

A :class:`Lab` builds "hosts" out of Linux namespaces on one machine:

* a *switch* network namespace holding bridge ``br0`` (the underlay L2 segment);
* per host, a network namespace plus a private mount namespace kept alive by one
  ``unshare -m --propagation private`` process; ``/var/run/wireguard``, ``/etc/vpcctl``,
  ``/var/lib/vpcctl`` and ``/run/vpcctl`` are private tmpfs mounts in it.  The host's ``eth0``
  is a veth into the switch with an address from a documentation range (192.0.2.0/24 by
  default);
* *containers*: plain network namespaces veth'd into a bridge that already exists in a host.

Safety: every address on the underlay must be in a documentation range, and no lab namespace
gets a route out of the machine (container default routes point at a gateway inside the lab).
Everything a run creates carries a short random tag, and :meth:`Lab.close` (also run from
``__exit__``, ``atexit`` and, when the SIGTERM handler was the default, on SIGTERM) kills every
process started and deletes every namespace.  ``close()`` never raises.

Nothing here starts wireguard-go: the software under test does that itself.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Capture",
    "Lab",
    "LabCommandError",
    "LabContainer",
    "LabError",
    "LabHost",
    "LabNode",
    "LabSwitch",
    "SshdInfo",
    "ping",
    "tcp_check",
]

LAB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Directories that are private tmpfs mounts inside every lab host.
PRIVATE_DIRS: tuple[str, ...] = (
    "/var/run/wireguard",
    "/etc/vpcctl",
    "/var/lib/vpcctl",
    "/run/vpcctl",
)

#: RFC 5737 documentation ranges; the only networks allowed on the underlay.
UNDERLAY_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
_TAG_RE = re.compile(r"^[a-z0-9]{1,8}$")
_IFNAMSIZ = 15

Command = Sequence[str] | str


class LabError(RuntimeError):
    """The lab could not be built or used as asked."""


class LabCommandError(subprocess.CalledProcessError):
    """A command run in the lab failed; ``str()`` includes its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if data:
                text += f"\n--- {label} ---\n{str(data).rstrip()}"
        return text


# --------------------------------------------------------------------------- nodes


@dataclass(eq=False)
class LabNode:
    """Anything with a network namespace in the lab."""

    name: str
    netns: str
    netns_inode: int = field(default=0, repr=False)


@dataclass(eq=False)
class LabSwitch(LabNode):
    """The underlay switch: a namespace holding bridge ``bridge`` (``br0``)."""

    bridge: str = "br0"


@dataclass(eq=False)
class LabHost(LabNode):
    """A lab host (or the admin machine): netns + private mount namespace.

    ``pid`` is the long-lived keeper process; commands enter it with
    ``nsenter -t PID -m -n -r -w``.  ``underlay_ip`` has no prefix length,
    ``underlay_cidr`` has it.  ``switch_port`` is the peer of ``eth0`` in the switch namespace.
    ``dir`` is this host's directory in the lab workdir (also the cwd of commands run in it).
    """

    pid: int = 0
    underlay_ip: str = ""
    underlay_cidr: str = ""
    switch_port: str = ""
    dir: Path = field(default_factory=Path)
    role: str = "host"
    lan: str = ""  # a router's LAN address (add_router), "" for hosts


@dataclass(eq=False)
class LabContainer(LabNode):
    """A container: a netns with ``eth0`` veth'd into ``bridge`` in ``host``'s netns.

    ``ip`` has no prefix length, ``cidr`` has it.  ``host_veth`` is the bridge-side end, in the
    host's namespace.
    """

    host: LabHost | None = None
    ip: str = ""
    cidr: str = ""
    gateway: str = ""
    bridge: str = ""
    host_veth: str = ""
    dir: Path = field(default_factory=Path)
    resolv: Path | None = None

    def resolv_conf(
        self, nameserver: str, search: str | None = None, options: str | None = None
    ) -> Path:
        """Make processes run in this container from now on see ``nameserver <nameserver>``
        (and a ``search`` list and ``options`` line when given).

        The file is written in the container's directory of the lab workdir and bind-mounted
        over /etc/resolv.conf in the private mount namespace of each command run in it (see
        :meth:`Lab.run`): nothing is written outside the workdir."""
        ns = _strip_prefix(nameserver)
        ipaddress.ip_address(ns)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "resolv.conf"
        text = f"nameserver {ns}\n"
        text += f"search {search}\n" if search else ""
        text += f"options {options}\n" if options else ""
        path.write_text(text)
        self.resolv = path
        return path


@dataclass
class SshdInfo:
    """An sshd serving one lab host.  Log in as ``user`` with ``client_key``."""

    host: LabHost
    address: str
    port: int
    host_key: Path
    host_key_pub: str
    host_key_fingerprint: str
    client_key: Path
    client_key_pub: str
    config: Path
    log: Path
    user: str = "root"

    def known_hosts_line(self) -> str:
        """A ``known_hosts`` line pinning this sshd's current host key."""
        addr = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{addr} {self.host_key_pub}"

    def ssh_argv(self, *remote: str, known_hosts: Path | None = None) -> list[str]:
        """``ssh`` argv for this host (no host key check unless ``known_hosts`` is given)."""
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
        if known_hosts is None:
            opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
        return [
            "ssh",
            *opts,
            "-i",
            str(self.client_key),
            "-p",
            str(self.port),
            f"{self.user}@{self.address}",
            *remote,
        ]


class Capture:
    """A running ``tcpdump -w``; :meth:`stop` returns the parsed packet summary lines."""

    def __init__(self, lab: Lab, proc: subprocess.Popen[str], path: Path, log: Path) -> None:
        self._lab = lab
        self.proc = proc
        self.path = path
        self.log = log
        self._lines: list[str] | None = None

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Stop tcpdump (SIGINT, flushing the file) and return ``tcpdump -nn -r`` lines."""
        if self._lines is not None:
            return self._lines
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self._lines = self.read()
        return self._lines

    def read(self) -> list[str]:
        """Parse the capture file as it is now (works while tcpdump still runs)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        res = subprocess.run(
            [self._lab.tool("tcpdump"), "-nn", "-r", str(self.path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            check=False,
        )
        return [line for line in res.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- helpers


def _strip_prefix(addr: str) -> str:
    return addr.split("/", 1)[0]


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    """Signal the process group that ``proc`` leads (started with start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _netns_inode(netns: str) -> int:
    return os.stat(f"/run/netns/{netns}").st_ino


def _pids_in_netns(inodes: set[int]) -> list[int]:
    """Pids of live (non-zombie) processes whose network namespace inode is in ``inodes``."""
    wanted = {f"net:[{i}]" for i in inodes}
    found: list[int] = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") not in wanted:
                continue
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(pid)
    return found


_LIVE_LABS: set[Lab] = set()
_LIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _close_all_labs() -> None:
    with _LIVE_LOCK:
        labs = list(_LIVE_LABS)
    for lab in labs:
        lab.close()


def _sigterm_to_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _install_hooks() -> None:
    """atexit backstop, and SIGTERM -> KeyboardInterrupt so finally/__exit__ blocks run."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_close_all_labs)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)


# --------------------------------------------------------------------------- the lab

_HOST_SCRIPT = r"""
set -e
for d in "$@"; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=0755 "vpclab-$LAB_TAG" "$d"
done
# A lab host is a server, not this developer machine: commands over SSH must not run the
# machine's interactive shell set-up (root's ~/.bashrc here runs `pyenv init`, 0.2 s a command).
if [ -f /root/.bashrc ]; then mount --bind /dev/null /root/.bashrc; fi
echo "ready $$"
exec sleep infinity
"""


_BIND_RESOLV = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


class Lab:
    """A set of namespaces on one machine; use as a context manager."""

    def __init__(self, workdir: Path, tag: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tools: dict[str, str] = {}
        if tag is None:
            tag = self._fresh_tag()
        if not _TAG_RE.match(tag):
            raise LabError(f"bad tag {tag!r}: want 1-8 chars of [a-z0-9]")
        self.tag = tag
        self.prefix = f"L{tag}-"
        self._lock = threading.RLock()
        self._closed = False
        self._counter = itertools.count(1)
        self._switch: LabSwitch | None = None
        self.hosts: dict[str, LabHost] = {}
        self.containers: dict[str, LabContainer] = {}
        self._names: set[str] = set()
        self._netns: list[str] = []  # creation order
        self._inodes: set[int] = set()
        self._keepers: list[subprocess.Popen[str]] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._captures: list[Capture] = []
        self._sshd: dict[str, tuple[subprocess.Popen[str], SshdInfo]] = {}
        self._underlay_used: set[str] = set()
        self._client_key: Path | None = None
        self._started_pids: list[int] = []
        _install_hooks()
        with _LIVE_LOCK:
            _LIVE_LABS.add(self)

    # ---------------------------------------------------------------- basics

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab(tag={self.tag!r}, workdir={str(self.workdir)!r})"

    @staticmethod
    def _fresh_tag() -> str:
        existing = set()
        with contextlib.suppress(OSError):
            existing = set(os.listdir("/run/netns"))
        while True:
            tag = secrets.token_hex(3)
            if not any(n.startswith(f"L{tag}-") for n in existing):
                return tag

    def tool(self, name: str) -> str:
        """Absolute path of a required binary (searched in the lab PATH)."""
        if name not in self._tools:
            path = shutil.which(name, path=LAB_PATH) or shutil.which(name)
            if path is None:
                raise LabError(f"required tool {name!r} not found")
            self._tools[name] = path
        return self._tools[name]

    def _check_open(self) -> None:
        if self._closed:
            raise LabError("lab is closed")

    def _claim_name(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise LabError(f"bad node name {name!r}: want [a-z][a-z0-9-]{{0,11}}")
        if name in self._names:
            raise LabError(f"node name {name!r} already used in this lab")
        self._names.add(name)
        return self.prefix + name

    def _host_cmd(self, argv: list[str], timeout: float = 30) -> str:
        """Run a setup command in the root namespace (only ip/... on our own namespaces)."""
        res = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
        if res.returncode != 0:
            raise LabCommandError(res.returncode, argv, res.stdout, res.stderr)
        return res.stdout

    def _ip(self, *args: str) -> str:
        return self._host_cmd([self.tool("ip"), *args])

    def _add_netns(self, netns: str) -> int:
        self._ip("netns", "add", netns)
        self._netns.append(netns)
        inode = _netns_inode(netns)
        self._inodes.add(inode)
        self._ip("-n", netns, "link", "set", "lo", "up")
        return inode

    @property
    def switch(self) -> LabSwitch:
        """The underlay switch (created on first use)."""
        with self._lock:
            self._check_open()
            if self._switch is None:
                netns = self.prefix + "sw"
                inode = self._add_netns(netns)
                sw = LabSwitch(name="sw", netns=netns, netns_inode=inode)
                self._ip("-n", netns, "link", "add", sw.bridge, "type", "bridge")
                self._ip("-n", netns, "link", "set", sw.bridge, "up")
                self._switch = sw
            return self._switch

    def _underlay_addr(self, requested: str | None, first: int) -> ipaddress.IPv4Interface:
        if requested is None:
            net = UNDERLAY_RANGES[0]
            for n in range(first, 255):
                cand = ipaddress.IPv4Interface(f"{net[n]}/{net.prefixlen}")
                if str(cand.ip) not in self._underlay_used:
                    break
            else:
                raise LabError("underlay addresses exhausted")
        else:
            if "/" not in requested:
                requested += "/24"
            cand = ipaddress.IPv4Interface(requested)
        if not any(cand.ip in r for r in UNDERLAY_RANGES):
            raise LabError(f"underlay address {cand} is not in a documentation range")
        if str(cand.ip) in self._underlay_used:
            raise LabError(f"underlay address {cand.ip} already used")
        self._underlay_used.add(str(cand.ip))
        return cand

    # ---------------------------------------------------------------- hosts

    def add_host(
        self, name: str, underlay_ip: str | None = None, behind: LabHost | None = None
    ) -> LabHost:
        """A host on the underlay; ``underlay_ip`` defaults to 192.0.2.N/24 (N = 1, 2, ...).
        ``behind``: a router from :meth:`add_router`; the host sits on its LAN instead (its
        ``underlay_ip`` is then required, in the router's LAN) with its default route via it."""
        return self._add_machine(name, underlay_ip, role="host", first=1, behind=behind)

    def add_router(self, name: str, lan: str) -> LabHost:
        """A masquerading NAT router: on the underlay like a host, with a LAN bridge ``lan``
        holding ``lan`` (e.g. "198.51.100.1/24", a documentation range) for hosts added with
        ``behind=``; forwarding on and ``masquerade`` out of ``eth0`` (nftables)."""
        router = self._add_machine(name, None, role="router", first=50)
        iface = ipaddress.IPv4Interface(lan)
        self._underlay_addr(str(iface), 1)  # claimed: in a documentation range, used once
        self._ip("-n", router.netns, "link", "add", "lan", "type", "bridge")
        self._ip("-n", router.netns, "addr", "add", str(iface), "dev", "lan")
        self._ip("-n", router.netns, "link", "set", "lan", "up")
        self.run(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        self.run(router, [self.tool("nft"), "add table ip labnat; add chain ip labnat post "
                          "{ type nat hook postrouting priority 100; }; add rule ip labnat post "
                          'oifname "eth0" masquerade'])  # fmt: skip
        router.lan = str(iface)
        return router

    def add_admin(self, name: str = "admin", underlay_ip: str | None = None) -> LabHost:
        """The admin machine: same kind of namespace; default address from 192.0.2.100 up."""
        return self._add_machine(name, underlay_ip, role="admin", first=100)

    def _add_machine(
        self, name: str, underlay_ip: str | None, role: str, first: int,
        behind: LabHost | None = None,
    ) -> LabHost:  # fmt: skip
        if behind is not None and (not behind.lan or underlay_ip is None):
            raise LabError(f"{name}: behind= needs a router (add_router) and an underlay_ip")
        with self._lock:
            self._check_open()
            sw = self.switch
            netns = self._claim_name(name)
            addr = self._underlay_addr(underlay_ip, first)
            idx = next(self._counter)
            port = f"p{idx}-{name}"[:_IFNAMSIZ]
            hdir = self.workdir / name
            hdir.mkdir(parents=True, exist_ok=True)
            inode = self._add_netns(netns)
            host = LabHost(
                name=name,
                netns=netns,
                netns_inode=inode,
                underlay_ip=str(addr.ip),
                underlay_cidr=str(addr),
                switch_port=port,
                dir=hdir,
                role=role,
            )
            # underlay: switch port (or the router's LAN port) <-> eth0, created directly in the
            # two namespaces
            up_ns, up_br = (sw.netns, sw.bridge) if behind is None else (behind.netns, "lan")
            self._ip("-n", up_ns, "link", "add", port, "type", "veth",
                     "peer", "name", "eth0", "netns", netns)  # fmt: skip
            self._ip("-n", up_ns, "link", "set", port, "master", up_br, "up")
            self._ip("-n", netns, "addr", "add", str(addr), "dev", "eth0")
            self._ip("-n", netns, "link", "set", "eth0", "up")
            if behind is not None:
                gw = ipaddress.IPv4Interface(behind.lan).ip
                self._ip("-n", netns, "route", "add", "default", "via", str(gw))
            host.pid = self._start_keeper(host)
            self.hosts[name] = host
            return host

    def _start_keeper(self, host: LabHost) -> int:
        for d in PRIVATE_DIRS:  # mount points must exist; left in place (empty) afterwards
            os.makedirs(os.path.realpath(d), exist_ok=True)
        argv = [self.tool("ip"), "netns", "exec", host.netns,
                self.tool("unshare"), "-m", "--propagation", "private",
                "/bin/sh", "-c", _HOST_SCRIPT, f"vpclab-{self.tag}-{host.name}",
                *PRIVATE_DIRS]  # fmt: skip
        log = open(host.dir / "keeper.log", "w")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=host.dir,
                env={"PATH": LAB_PATH, "LAB_TAG": self.tag},
                start_new_session=True,
            )
        finally:
            log.close()
        self._keepers.append(proc)
        self._started_pids.append(proc.pid)
        assert proc.stdout is not None
        line = _readline_timeout(proc.stdout, 10.0)
        if not line.startswith("ready "):
            err = (host.dir / "keeper.log").read_text(errors="replace")
            raise LabError(f"host {host.name}: namespace keeper failed: {line!r} {err}")
        pid = int(line.split()[1])
        if pid != proc.pid:  # should be equal: ip, unshare and sh all exec
            self._started_pids.append(pid)
        return pid

    def add_container(
        self,
        host: LabHost,
        name: str,
        bridge: str,
        ip: str,
        gateway: str,
        mtu: int | None = None,
        *,
        resolv_conf: bool = False,
    ) -> LabContainer:
        """A namespace with ``eth0`` = ``ip`` and a default route via ``gateway``.

        The other veth end goes into ``host``'s netns, enslaved to ``bridge`` (which must exist
        there already).  With ``resolv_conf=True`` processes in it see ``nameserver <gateway>``.
        """
        with self._lock:
            self._check_open()
            if self.hosts.get(host.name) is not host:
                raise LabError(f"{host.name} is not a host of this lab")
            iface = ipaddress.IPv4Interface(ip if "/" in ip else f"{ip}/24")
            gw = ipaddress.IPv4Address(_strip_prefix(gateway))
            if gw not in iface.network:
                raise LabError(f"gateway {gw} is not in {iface.network}")
            if not self._is_bridge(host.netns, bridge):
                raise LabError(f"no bridge {bridge!r} in host {host.name}")
            netns = self._claim_name(name)
            idx = next(self._counter)
            hveth = f"v{idx}-{name}"[:_IFNAMSIZ]
            inode = self._add_netns(netns)
            ctr = LabContainer(
                name=name,
                netns=netns,
                netns_inode=inode,
                host=host,
                ip=str(iface.ip),
                cidr=str(iface),
                gateway=str(gw),
                bridge=bridge,
                host_veth=hveth,
                dir=self.workdir / name,
            )
            self.containers[name] = ctr
            self._ip("-n", host.netns, "link", "add", hveth, "type", "veth",
                     "peer", "name", "eth0", "netns", netns)  # fmt: skip
            if mtu is not None:
                self._ip("-n", host.netns, "link", "set", hveth, "mtu", str(mtu))
                self._ip("-n", netns, "link", "set", "eth0", "mtu", str(mtu))
            self._ip("-n", host.netns, "link", "set", hveth, "master", bridge, "up")
            self._ip("-n", netns, "addr", "add", str(iface), "dev", "eth0")
            self._ip("-n", netns, "link", "set", "eth0", "up")
            self._ip("-n", netns, "route", "add", "default", "via", str(gw), "dev", "eth0")
            if resolv_conf:
                self.resolv_conf(ctr, str(gw))
            return ctr

    def resolv_conf(self, container: LabContainer, nameserver: str) -> Path:
        """See :meth:`LabContainer.resolv_conf` (a file in the lab workdir)."""
        return container.resolv_conf(nameserver)

    def _is_bridge(self, netns: str, dev: str) -> bool:
        res = subprocess.run(
            [self.tool("ip"), "-n", netns, "-d", "-o", "link", "show", "dev", dev],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        return res.returncode == 0 and " bridge " in res.stdout

    # ---------------------------------------------------------------- running things

    def _argv(self, who: LabNode, cmd: Command) -> list[str]:
        self._check_open()
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if isinstance(who, LabHost):
            if self.hosts.get(who.name) is not who:
                raise LabError(f"{who.name} is not a host of this lab")
            return [self.tool("nsenter"), "-t", str(who.pid), "-m", "-n", "-r", "-w", *argv]
        if who.netns not in self._netns:
            raise LabError(f"{who.name} is not part of this lab")
        if isinstance(who, LabContainer) and who.resolv is not None:
            # `ip netns exec` runs each command in a mount namespace of its own (a slave of the
            # machine's): the bind mount is seen by that command only
            argv = ["/bin/sh", "-c", _BIND_RESOLV, str(who.resolv), *argv]
        return [self.tool("ip"), "netns", "exec", who.netns, *argv]

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str]:
        out = {"PATH": LAB_PATH, "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
        if "PYTHONPATH" in os.environ:
            out["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if env:
            out.update(env)
        return out

    def run(
        self,
        who: LabNode,
        cmd: Command,
        *,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in ``who`` (a str runs via ``sh -c``) and capture its output.

        On timeout the whole process group is killed and ``subprocess.TimeoutExpired`` raised;
        with ``check`` a non-zero exit raises :class:`LabCommandError` (which shows the output).
        """
        argv = self._argv(who, cmd)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=self._env(env),
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _signal_group(proc, signal.SIGKILL)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, err = "", ""
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from exc
        except BaseException:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and res.returncode != 0:
            raise LabCommandError(res.returncode, argv, out, err)
        return res

    def popen(self, who: LabNode, cmd: Command, **kw: Any) -> subprocess.Popen[str]:
        """Start ``cmd`` in ``who`` in the background; killed (whole group) at close().

        stdout/stderr default to ``<workdir>/logs/<node>-<n>.log``; pass ``stdout=``/``stderr=``
        to override.  ``env`` is merged into the lab environment (see :meth:`run`).
        """
        with self._lock:
            argv = self._argv(who, cmd)
            env = self._env(kw.pop("env", None))
            kw.setdefault("stdin", subprocess.DEVNULL)
            kw.setdefault("text", True)
            kw["start_new_session"] = True
            log = None
            if "stdout" not in kw or "stderr" not in kw:
                logs = self.workdir / "logs"
                logs.mkdir(exist_ok=True)
                log = open(logs / f"{who.name}-{len(self._procs) + 1}.log", "w")  # noqa: SIM115
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", subprocess.STDOUT if kw["stdout"] is log else log)
            try:
                proc: subprocess.Popen[str] = subprocess.Popen(argv, env=env, **kw)
            finally:
                if log is not None:
                    log.close()
            self._procs.append(proc)
            self._started_pids.append(proc.pid)
            return proc

    def kill(self, proc: subprocess.Popen[str], timeout: float = 3.0) -> None:
        """Stop a process started with :meth:`popen` (SIGTERM, then SIGKILL, to its group)."""
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout)
        _signal_group(proc, signal.SIGKILL)  # leftovers in the group

    # ---------------------------------------------------------------- sshd

    def client_key(self) -> Path:
        """The lab's SSH client key (ed25519, no passphrase), generated on first use."""
        with self._lock:
            if self._client_key is None:
                key = self.workdir / "ssh" / "client_ed25519"
                key.parent.mkdir(parents=True, exist_ok=True)
                self._keygen(key, f"vpclab-{self.tag}-client")
                (self.workdir / "ssh" / "authorized_keys").write_text(
                    Path(f"{key}.pub").read_text()
                )
                self._client_key = key
            return self._client_key

    def _keygen(self, path: Path, comment: str) -> None:
        for p in (path, Path(f"{path}.pub")):
            p.unlink(missing_ok=True)
        self._host_cmd([self.tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "",
                        "-C", comment, "-f", str(path)])  # fmt: skip

    def start_sshd(self, host: LabHost, port: int = 22) -> SshdInfo:
        """Start ``sshd -D`` on ``host``'s underlay address; root logs in with client_key()."""
        with self._lock:
            self._check_open()
            if host.name in self._sshd:
                raise LabError(f"sshd already running on {host.name}")
            client = self.client_key()
            sdir = self.workdir / "ssh" / host.name
            sdir.mkdir(parents=True, exist_ok=True)
            host_key = sdir / "ssh_host_ed25519_key"
            if not host_key.exists():
                self._keygen(host_key, f"vpclab-{self.tag}-{host.name}")
            config = sdir / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"ListenAddress {host.underlay_ip}",
                        f"Port {port}",
                        f"HostKey {host_key}",
                        f"AuthorizedKeysFile {self.workdir / 'ssh' / 'authorized_keys'}",
                        "PidFile none",
                        "StrictModes no",
                        "PermitRootLogin prohibit-password",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "UseDNS no",
                        "PrintMotd no",
                        "Subsystem sftp internal-sftp",
                        "LogLevel VERBOSE",
                        "",
                    ]
                )
            )
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            log = sdir / "sshd.log"
            with open(log, "a") as lf:
                proc = self.popen(host, [self.tool("sshd"), "-D", "-e", "-f", str(config)],
                                  stdout=lf, stderr=subprocess.STDOUT)  # fmt: skip
            info = SshdInfo(
                host=host,
                address=host.underlay_ip,
                port=port,
                host_key=host_key,
                host_key_pub=Path(f"{host_key}.pub").read_text().strip(),
                host_key_fingerprint=self._fingerprint(Path(f"{host_key}.pub")),
                client_key=client,
                client_key_pub=Path(f"{client}.pub").read_text().strip(),
                config=config,
                log=log,
            )
            self._sshd[host.name] = (proc, info)
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise LabError(f"sshd on {host.name} exited: {log.read_text(errors='replace')}")
                res = self.run(host, ["ss", "-Hltn", f"sport = :{port}"], check=False)
                if host.underlay_ip in res.stdout:
                    return info
                if time.monotonic() > deadline:
                    raise LabError(f"sshd on {host.name} not listening after 10 s")
                time.sleep(0.05)

    def _fingerprint(self, pub: Path) -> str:
        out = self._host_cmd([self.tool("ssh-keygen"), "-l", "-E", "sha256", "-f", str(pub)])
        return out.split()[1]

    def stop_sshd(self, host: LabHost) -> None:
        with self._lock:
            entry = self._sshd.pop(host.name, None)
            if entry is not None:
                self.kill(entry[0])

    def restart_sshd(self, host: LabHost, new_host_key: bool = False) -> SshdInfo:
        """Restart sshd on ``host``; ``new_host_key=True`` first replaces its host key."""
        with self._lock:
            entry = self._sshd.get(host.name)
            port = entry[1].port if entry else 22
            self.stop_sshd(host)
            if new_host_key:
                key = self.workdir / "ssh" / host.name / "ssh_host_ed25519_key"
                self._keygen(key, f"vpclab-{self.tag}-{host.name}")
            return self.start_sshd(host, port=port)

    # ---------------------------------------------------------------- captures

    def capture(self, who: LabNode, iface: str, filter: str = "") -> Capture:
        """Start ``tcpdump -U -w`` on ``iface`` in ``who`` (hosts, containers or ``lab.switch``).

        Returns once tcpdump is listening.  On the switch, capturing on ``br0`` sees forwarded
        frames because tcpdump puts the bridge into promiscuous mode.
        """
        with self._lock:
            self._check_open()
            cdir = self.workdir / "captures"
            cdir.mkdir(exist_ok=True)
            n = len(self._captures) + 1
            path = cdir / f"{n}-{who.name}-{iface}.pcap"
            log = cdir / f"{n}-{who.name}-{iface}.log"
            argv = [self.tool("tcpdump"), "-i", iface, "-nn", "-U", "--immediate-mode",
                    "-Z", "root", "-w", str(path)]  # fmt: skip
            if filter:
                argv += shlex.split(filter)
            with open(log, "w") as lf:
                proc = self.popen(who, argv, stdout=lf, stderr=subprocess.STDOUT)
            cap = Capture(self, proc, path, log)
            self._captures.append(cap)
            deadline = time.monotonic() + 10
            while "listening on" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LabError(f"tcpdump failed: {log.read_text(errors='replace')}")
                time.sleep(0.02)
            return cap

    # ---------------------------------------------------------------- teardown

    @property
    def started_pids(self) -> list[int]:
        """Pids of every process this lab started directly."""
        return list(self._started_pids)

    @property
    def netns_names(self) -> list[str]:
        """Every network namespace name this lab created (deleted ones included)."""
        return list(self._netns)

    def stray_pids(self) -> list[int]:
        """Live processes still inside one of this lab's network namespaces."""
        return _pids_in_netns(self._inodes)

    def close(self) -> None:
        """Tear everything down.  Idempotent; logs failures to stderr instead of raising."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._teardown()
            except BaseException as exc:  # never raise out of close()
                _log(f"teardown of {self!r} failed: {exc!r}")
            finally:
                with _LIVE_LOCK:
                    _LIVE_LABS.discard(self)

    def _teardown(self) -> None:
        procs = [c.proc for c in self._captures] + list(reversed(self._procs)) + self._keepers
        for p in procs:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            _signal_group(p, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _log(f"process {p.pid} ({p.args!r}) did not die")
            for stream in (p.stdout, p.stderr, p.stdin):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        # backstop: anything still inside one of our network namespaces (escaped daemons)
        for _ in range(3):
            stray = _pids_in_netns(self._inodes) if self._inodes else []
            if not stray:
                break
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        else:
            _log(f"processes left in lab namespaces: {stray}")
        for netns in reversed(self._netns):
            res = subprocess.run(
                [self.tool("ip"), "netns", "del", netns],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            if res.returncode != 0 and os.path.exists(f"/run/netns/{netns}"):
                _log(f"ip netns del {netns} failed: {res.stderr.strip()}")


def _readline_timeout(stream: Any, timeout: float) -> str:
    """Read one line from a text pipe, giving up after ``timeout`` seconds."""
    result: list[str] = []

    def reader() -> None:
        with contextlib.suppress(Exception):
            result.append(stream.readline())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return result[0].strip() if result else ""


# --------------------------------------------------------------------------- probes

_PING_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def ping(
    lab: Lab, who: LabNode, dst: str, count: int = 3, interval: float = 0.2
) -> tuple[int, int]:
    """Ping ``dst`` from ``who``; returns (sent, received)."""
    res = lab.run(
        who,
        ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", _strip_prefix(dst)],
        check=False,
        timeout=count * interval + 10,
    )
    return ping_counts(res.stdout) if _PING_RE.search(res.stdout) else (0, 0)


def ping_counts(output: str) -> tuple[int, int]:
    """(sent, received) from ping's summary line (iputils and busybox)."""
    m = _PING_RE.search(output)
    if m is None:
        raise LabError(f"no ping summary in {output[-200:]!r}")
    return (int(m.group(1)), int(m.group(2)))


_TCP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(float(sys.argv[3]))
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(float(sys.argv[3]))
data = b""
while not data.endswith(b"\\n"):
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
c.sendall(data)
c.close()
"""

_TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(sys.argv[4].encode() + b"\\n")
data = b""
while True:
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


def _address_of(node: LabNode) -> str:
    if isinstance(node, LabHost):
        return node.underlay_ip
    if isinstance(node, LabContainer):
        return node.ip
    raise LabError(f"no default address for {node.name}; pass address=")


def tcp_check(
    lab: Lab,
    client: LabNode,
    server: LabNode,
    port: int,
    *,
    address: str | None = None,
    bind: str = "0.0.0.0",
    timeout: float = 5.0,
) -> bool:
    """A real TCP round trip: echo server in ``server``, client in ``client``.

    Connects to ``address`` (default: the server's underlay/container address) and returns
    True iff the random token sent came back.  Uses the running Python interpreter.
    """
    py = sys.executable
    dst = _strip_prefix(address) if address else _address_of(server)
    token = secrets.token_hex(8)
    srv = lab.popen(
        server,
        [py, "-c", _TCP_SERVER, bind, str(port), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert srv.stdout is not None
        if _readline_timeout(srv.stdout, timeout + 5) != "listening":
            return False
        res = lab.run(
            client,
            [py, "-c", _TCP_CLIENT, dst, str(port), str(timeout), token],
            check=False,
            timeout=timeout + 10,
        )
        return res.returncode == 0 and res.stdout.strip() == token
    finally:
        lab.kill(srv)
