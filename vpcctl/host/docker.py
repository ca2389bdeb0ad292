"""Docker on a host: vpcctl's Docker networks, their firewall openings, and discovery (edge).

The only module that imports the ``docker`` package (the Docker Engine API over the unix socket;
never the text of ``docker ps``). It is imported lazily, so a host without Docker pays one
``stat`` of the socket and nothing else. README "Docker".

**Networks.** For every VPC slice of this host: a bridge-driver network ``vpc-<vpc>`` on vpcctl's
bridge (``com.docker.network.bridge.name``), subnet = the slice, gateway = the slice gateway, no
masquerading, MTU = the VPC MTU, gateway mode ``routed`` (Docker >= 28: no raw-table drops for
traffic routed in; ignored by older daemons), the mesh interfaces as trusted host interfaces
(Docker >= 28.2), and ``--ip-range`` = the upper half of the slice (:func:`docker_range`): the
declared containers of ``vpc.toml`` are numbered from the lower half only. Networks carry the
labels ``io.vpcctl.mesh``/``io.vpcctl.vpc``/``io.vpcctl.host``; only labelled networks are ever
changed or removed. A foreign network with our name or on our bridge is reported, not touched.

**Firewall.** A dockerd that enables forwarding sets the iptables FORWARD policy to DROP and
drops between its bridges; an accept in vpcctl's own nftables table cannot override a drop in
another table. So vpcctl puts, through :mod:`vpcctl.host.iptables`, accept rules for traffic
between the mesh interfaces and the VPC bridges at the top of ``DOCKER-USER`` (the chain Docker
documents for this), marked with a comment naming the mesh; VPC isolation stays in vpcctl's
nftables table, which still drops VPC-to-VPC traffic (a packet must pass every table).

**Discovery.** :class:`DockerDiscovery` lists the running containers on vpcctl's networks, follows
the event stream, and relists in full on start, on every reconnect and periodically.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from vpcctl.core.endpoints import Endpoint, Labels
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import docker_range, parse_label
from vpcctl.core.names import docker_network_name
from vpcctl.core.spec import HostSpec, VpcSpec
from vpcctl.host.discovery import Publish
from vpcctl.host.dockersocket import DEFAULT_URL as DEFAULT_URL
from vpcctl.host.dockersocket import docker_url as docker_url
from vpcctl.host.dockersocket import present as present
from vpcctl.host.dockersocket import socket_path as socket_path
from vpcctl.host.dockersocket import socket_stamp as socket_stamp

LABEL_MESH = "io.vpcctl.mesh"
LABEL_VPC = "io.vpcctl.vpc"
LABEL_HOST = "io.vpcctl.host"
LABEL_NAME = "io.vpcctl.name"  # a container label overriding the announced name
DAEMON_JSON = Path("/etc/docker/daemon.json")

OPT_BRIDGE = "com.docker.network.bridge.name"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_GATEWAY_MODE = "com.docker.network.bridge.gateway_mode_ipv4"
OPT_TRUSTED = "com.docker.network.bridge.trusted_host_interfaces"

#: container labels left out of an endpoint (image metadata, not selectors)
_SKIP_LABEL_PREFIXES = ("org.opencontainers.", "org.label-schema.")


# ---------------------------------------------------------------------------------------------
# pure: what the networks should be


@dataclass(frozen=True, slots=True)
class NetworkWant:
    name: str
    vpc: str
    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network | None
    mtu: int
    options: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]


def mesh_interfaces(spec: HostSpec) -> tuple[str, ...]:
    """The interfaces VPC traffic from other hosts arrives on (WireGuard, and the IPIP tunnel)."""
    return (spec.interface, *((spec.tunnel.name,) if spec.tunnel else ()))


def want(spec: HostSpec, v: VpcSpec) -> NetworkWant:
    options = {
        OPT_BRIDGE: v.bridge,
        OPT_MASQ: "false",
        OPT_MTU: str(v.mtu),
        OPT_GATEWAY_MODE: "routed",
        OPT_TRUSTED: ":".join(mesh_interfaces(spec)),
    }
    labels = {LABEL_MESH: spec.mesh, LABEL_VPC: v.name, LABEL_HOST: spec.host}
    return NetworkWant(
        name=docker_network_name(v.name), vpc=v.name, bridge=v.bridge, subnet=v.slice,
        gateway=v.gateway.ip, ip_range=docker_range(v.slice), mtu=v.mtu,
        options=tuple(sorted(options.items())), labels=tuple(sorted(labels.items())),
    )  # fmt: skip


def wanted_networks(spec: HostSpec) -> tuple[NetworkWant, ...]:
    return tuple(want(spec, v) for v in spec.vpcs)


def _ipam(net: Mapping[str, Any]) -> dict[str, str]:
    configs = ((net.get("IPAM") or {}).get("Config")) or [{}]
    return {k: str(configs[0].get(k) or "") for k in ("Subnet", "Gateway", "IPRange")}


def differences(w: NetworkWant, net: Mapping[str, Any]) -> list[str]:
    """How an existing network (``docker network inspect`` JSON) differs from ``w``."""
    out = []
    if net.get("Driver") != "bridge":
        out.append(f"driver {net.get('Driver')} (want bridge)")
    ipam = _ipam(net)
    for key, value in (("Subnet", w.subnet), ("Gateway", w.gateway), ("IPRange", w.ip_range)):
        if ipam[key] != (str(value) if value is not None else ""):
            out.append(f"{key.lower()} {ipam[key] or '-'} (want {value or '-'})")
    opts = net.get("Options") or {}
    for key in (OPT_BRIDGE, OPT_MASQ, OPT_MTU):
        if str(opts.get(key, "")) != dict(w.options)[key]:
            out.append(f"{key}={opts.get(key, '-')} (want {dict(w.options)[key]})")
    return out


def is_ours(net: Mapping[str, Any], mesh: str | None = None) -> bool:
    labels = net.get("Labels") or {}
    return (
        LABEL_VPC in labels
        and LABEL_MESH in labels
        and (mesh is None or labels[LABEL_MESH] == mesh)
    )


@dataclass(frozen=True, slots=True)
class NetPlan:
    """What to do with Docker's networks: pure result of :func:`plan_networks`."""

    create: tuple[NetworkWant, ...] = ()
    remove: tuple[str, ...] = ()  # ids of our networks no longer wanted (or to be recreated)
    ok: tuple[str, ...] = ()  # names already right
    problems: tuple[str, ...] = ()  # foreign conflicts and networks left alone, with hints


def plan_networks(
    wants: Iterable[NetworkWant], existing: Iterable[Mapping[str, Any]], mesh: str
) -> NetPlan:
    """Create what is missing, recreate ours when they differ (unless containers use them),
    remove ours that are no longer wanted; never touch a foreign network."""
    nets = list(existing)
    by_name = {n.get("Name"): n for n in nets}
    create, remove, ok, problems = [], [], [], []
    wanted_names = set()
    for w in wants:
        wanted_names.add(w.name)
        net = by_name.get(w.name)
        if net is not None and not is_ours(net, mesh):
            problems.append(
                f"a Docker network named {w.name} exists that vpcctl did not create (no "
                f"{LABEL_MESH}={mesh} label); left alone. hint: remove or rename it "
                f"(`docker network rm {w.name}`) and re-run the apply"
            )
            continue
        on_bridge = [
            n for n in nets
            if (n.get("Options") or {}).get(OPT_BRIDGE) == w.bridge and n.get("Name") != w.name
        ]  # fmt: skip
        if on_bridge:
            problems.append(
                f"Docker network {on_bridge[0].get('Name')} already uses bridge {w.bridge}; "
                f"{w.name} not created. hint: remove that network (containers on it are "
                "not in vpcctl's VPC the intended way)"
            )
            continue
        if net is None:
            create.append(w)
            continue
        diff = differences(w, net)
        if not diff:
            ok.append(w.name)
        elif net.get("Containers"):
            problems.append(
                f"Docker network {w.name} differs ({'; '.join(diff)}) but containers use it; "
                "left as it is. hint: stop them, `docker network rm "
                f"{w.name}`, and re-run the apply"
            )
        else:
            remove.append(str(net.get("Id")))
            create.append(w)
    for n in nets:
        if is_ours(n, mesh) and n.get("Name") not in wanted_names:
            if n.get("Containers"):
                problems.append(
                    f"Docker network {n.get('Name')} belongs to no VPC of this host any more "
                    "but containers use it; left in place. hint: stop them and re-run"
                )
            else:
                remove.append(str(n.get("Id")))
    return NetPlan(tuple(create), tuple(remove), tuple(ok), tuple(problems))


def user_rules(spec: HostSpec) -> list[list[str]]:
    """The DOCKER-USER accepts (iptables arguments after the chain) that let VPC traffic between
    the mesh interfaces and the VPC bridges through Docker's FORWARD rules."""
    rules = []
    comment = ["-m", "comment", "--comment", f"vpcctl:{spec.mesh}"]
    for v in spec.vpcs:
        for m in mesh_interfaces(spec):
            # in the order `iptables -S` prints a rule, so that listing and wanting compare equal
            rules.append(["-d", str(v.slice), "-i", m, "-o", v.bridge, *comment, "-j", "ACCEPT"])
            rules.append(["-s", str(v.slice), "-i", v.bridge, "-o", m, *comment, "-j", "ACCEPT"])
    return rules


# ---------------------------------------------------------------------------------------------
# pure: containers -> endpoints


def _labels(raw: Mapping[str, Any] | None) -> Labels:
    return tuple(
        sorted(
            (str(k), str(v))
            for k, v in (raw or {}).items()
            if not str(k).startswith(_SKIP_LABEL_PREFIXES)
        )
    )


def container_name(c: Mapping[str, Any]) -> str | None:
    """The DNS label a container is announced as: label ``io.vpcctl.name``, else its name
    (lower-cased, ``_`` -> ``-``, as compose v1 names it); None when that is no valid label."""
    labels = (c.get("Config") or {}).get("Labels") or {}
    raw = labels.get(LABEL_NAME) or str(c.get("Name") or "").lstrip("/")
    try:
        return parse_label(raw.lower().replace("_", "-"), "container name")
    except ValidationError:
        return None


def ready(c: Mapping[str, Any]) -> bool:
    """Ready = running, not paused, and no healthcheck or a healthy one."""
    state = c.get("State") or {}
    if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
        return False
    health = (state.get("Health") or {}).get("Status")
    return health in (None, "", "none", "healthy")


def endpoints_of(
    host: str, c: Mapping[str, Any], vpc_of: Mapping[str, str]
) -> tuple[Endpoint, ...]:
    """The endpoints of one container (``docker inspect`` JSON) on vpcctl's networks
    (``vpc_of``: network name -> VPC); () when it is not running or not on one."""
    if not (c.get("State") or {}).get("Running"):
        return ()
    name = container_name(c)
    if name is None:
        return ()
    labels = _labels((c.get("Config") or {}).get("Labels"))
    ok = ready(c)
    out = []
    for net, settings in sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).items()):
        vpc = vpc_of.get(net)
        ip = (settings or {}).get("IPAddress")
        if vpc is None or not ip:
            continue
        try:
            address = IPv4Address(ip)
        except ValueError:
            continue
        out.append(
            Endpoint(host=host, vpc=vpc, name=name, address=address, labels=labels, ready=ok)
        )
    return tuple(out)


def endpoints_from_inspect(
    host: str, containers: Iterable[Mapping[str, Any]], vpc_of: Mapping[str, str]
) -> tuple[Endpoint, ...]:
    """Every endpoint of ``containers``, sorted (vpc, name, address), one per (vpc, name)."""
    seen: dict[tuple[str, str], Endpoint] = {}
    for c in containers:
        for e in endpoints_of(host, c, vpc_of):
            seen.setdefault((e.vpc, e.name), e)
    return tuple(sorted(seen.values(), key=lambda e: (e.vpc, e.name, e.address)))


def vpc_networks(nets: Iterable[Mapping[str, Any]], mesh: str | None = None) -> dict[str, str]:
    """Network name -> VPC for vpcctl's networks."""
    return {str(n["Name"]): str(n["Labels"][LABEL_VPC]) for n in nets if is_ours(n, mesh)}


# ---------------------------------------------------------------------------------------------
# pure: do this host's containers get vpcctl's resolver?


def dns_report(
    spec: HostSpec,
    containers: Iterable[Mapping[str, Any]],
    daemon_dns: Iterable[str],
) -> dict[str, Any]:
    """Per VPC network: how many running containers have the VPC gateway as DNS server
    (``--dns``/compose ``dns:`` in HostConfig.Dns, or daemon.json ``dns`` when they set none)."""
    gateways = {docker_network_name(v.name): str(v.gateway.ip) for v in spec.vpcs}
    daemon = [str(d) for d in daemon_dns]
    per: dict[str, dict[str, Any]] = {
        n: {"network": n, "gateway": gw, "containers": 0, "with_resolver": 0, "without": []}
        for n, gw in gateways.items()
    }
    for c in containers:
        if not (c.get("State") or {}).get("Running"):
            continue
        dns = [str(x) for x in ((c.get("HostConfig") or {}).get("Dns") or [])] or daemon
        for net in (c.get("NetworkSettings") or {}).get("Networks") or {}:
            if net not in per:
                continue
            row = per[net]
            row["containers"] += 1
            if row["gateway"] in dns:
                row["with_resolver"] += 1
            else:
                row["without"].append(str(c.get("Name") or "").lstrip("/"))
    rows = [per[n] for n in sorted(per)]
    total = sum(r["containers"] for r in rows)
    good = sum(r["with_resolver"] for r in rows)
    verdict = (
        "no containers" if total == 0 else "all" if good == total else "some" if good else "none"
    )
    return {"containers_get_resolver": verdict, "daemon_dns": daemon, "networks": rows}


def read_daemon_dns(path: Path = DAEMON_JSON) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    dns = data.get("dns") if isinstance(data, dict) else None
    return [str(x) for x in dns] if isinstance(dns, list) else []


# ---------------------------------------------------------------------------------------------
# edge: the Engine API


class DockerUnavailable(Exception):
    """dockerd cannot be reached (or answered an error)."""


def _import_docker() -> None:
    """Import the ``docker`` package without its optional ssh:// transport: that imports paramiko
    (about 18 MB resident), which a host never needs; the agent daemon stays within its memory
    budget (README "Figures"). ``None`` in ``sys.modules`` makes ``import paramiko`` fail, which
    docker-py handles as "ssh:// not available"; the entry is removed again right after, so an
    admin process that imports paramiko later still can."""
    if "docker.api.client" in sys.modules or "paramiko" in sys.modules:
        return
    sys.modules["paramiko"] = None  # type: ignore[assignment]
    try:
        import docker  # noqa: F401
    finally:
        if sys.modules.get("paramiko", 0) is None:
            del sys.modules["paramiko"]


def _errors() -> tuple[type[BaseException], ...]:
    _import_docker()
    import docker.errors
    import requests.exceptions

    return (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def client(url: str | None = None, timeout: float = 10.0) -> Any:
    """A low-level Engine API client (its answers are the inspect JSON the pure code reads)."""
    _import_docker()
    import docker

    try:
        return docker.APIClient(base_url=url or docker_url(), version="auto", timeout=timeout)
    except _errors() as exc:
        raise DockerUnavailable(str(exc)) from None


@dataclass
class Report:
    """What :func:`ensure_networks` / :func:`remove_networks` did and found."""

    present: bool = False
    version: str | None = None
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    firewall: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present, "version": self.version, "created": self.created,
            "removed": self.removed, "ok": self.ok, "problems": self.problems,
            "firewall": self.firewall,
        }  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"docker: created network {n}" for n in self.created]
        out += [f"docker: removed network {n}" for n in self.removed]
        out += [f"docker: warning: {p}" for p in self.problems]
        return out


def _all_networks(api: Any) -> list[dict[str, Any]]:
    return [api.inspect_network(n["Id"]) for n in api.networks()]


def ensure_networks(spec: HostSpec, url: str | None = None) -> Report:
    """Make this host's Docker networks and DOCKER-USER accepts match ``spec``. Safe to call
    again and again (the agent daemon calls it whenever dockerd (re)appears). Without Docker it
    returns at once (``present`` False). Never raises for Docker's sake: problems are reported."""
    from vpcctl.host import iptables

    report = Report()
    if not present(url):
        return report
    try:
        api = client(url)
        report.present = True
        report.version = str(api.version().get("Version"))
        p = plan_networks(wanted_networks(spec), _all_networks(api), spec.mesh)
        report.ok = list(p.ok)
        report.problems = list(p.problems)
        for net_id in p.remove:
            name = api.inspect_network(net_id).get("Name", net_id)
            api.remove_network(net_id)
            report.removed.append(str(name))
        for w in p.create:
            _create(api, w)
            report.created.append(w.name)
    except DockerUnavailable as exc:
        report.problems.append(f"dockerd did not answer at {url or docker_url()}: {exc}")
        return report
    except _errors() as exc:
        report.problems.append(f"Docker refused a network change: {_explain(exc)}")
    report.firewall = iptables.ensure_docker_user(user_rules(spec), f"vpcctl:{spec.mesh}")
    return report


def _explain(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


def _create(api: Any, w: NetworkWant) -> None:
    from docker.types import IPAMConfig, IPAMPool

    pool = IPAMPool(
        subnet=str(w.subnet), gateway=str(w.gateway),
        iprange=str(w.ip_range) if w.ip_range is not None else None,
    )  # fmt: skip
    api.create_network(
        w.name, driver="bridge", options=dict(w.options), ipam=IPAMConfig(pool_configs=[pool]),
        labels=dict(w.labels), check_duplicate=True,
    )  # fmt: skip


def remove_networks(mesh: str | None, url: str | None = None) -> Report:
    """Teardown: remove the networks vpcctl made (labelled; of ``mesh`` when given), first
    disconnecting their containers, and vpcctl's DOCKER-USER rules. Foreign ones stay."""
    from vpcctl.host import iptables

    report = Report()
    if present(url):
        try:
            api = client(url)
            report.present = True
            for net in _all_networks(api):
                if not is_ours(net, mesh):
                    continue
                for cid in net.get("Containers") or {}:
                    api.disconnect_container_from_network(cid, net["Id"], force=True)
                api.remove_network(net["Id"])
                report.removed.append(str(net["Name"]))
        except DockerUnavailable as exc:
            report.problems.append(f"dockerd did not answer: {exc}")
        except _errors() as exc:
            report.problems.append(f"Docker refused to remove a network: {_explain(exc)}")
    report.firewall = iptables.remove_docker_user(f"vpcctl:{mesh}" if mesh else "vpcctl:")
    return report


def status(spec: HostSpec | None, url: str | None = None) -> dict[str, Any]:
    """``agent status``'s docker section: networks and whether containers get the resolver."""
    if not present(url):
        return {"present": False}
    try:
        api = client(url)
        version = str(api.version().get("Version"))
        nets = _all_networks(api)
        ours = vpc_networks(nets, spec.mesh if spec else None)
        containers = [api.inspect_container(c["Id"]) for c in api.containers()]
    except (DockerUnavailable, *_errors()) as exc:  # type: ignore[misc]
        return {"present": True, "reachable": False, "error": _explain(exc)}
    data: dict[str, Any] = {
        "present": True, "reachable": True, "version": version,
        "networks": sorted(ours), "endpoints": [
            {"vpc": e.vpc, "name": e.name, "address": str(e.address), "ready": e.ready}
            for e in endpoints_from_inspect(spec.host if spec else "", containers, ours)
        ],
    }  # fmt: skip
    if spec is not None:
        data["dns"] = dns_report(spec, containers, read_daemon_dns())
    return data


# ---------------------------------------------------------------------------------------------
# edge: discovery


def _log(message: str) -> None:
    sys.stderr.write(f"docker discovery: {message}\n")
    sys.stderr.flush()


_CONTAINER_ACTIONS = ("start", "die", "stop", "kill", "pause", "unpause", "destroy", "rename",
                      "restart", "oom")  # fmt: skip


class DockerDiscovery:
    """:class:`~vpcctl.host.discovery.Discovery` through the Engine API.

    Full relist on start, after every reconnect (backoff 0.5 s doubling to 5 s while dockerd is
    down) and every ``relist`` seconds; in between the event stream (container start, die, stop,
    health_status, network connect/disconnect) triggers a re-inspect of that one container.
    ``publish`` gets the full set only when it changed. While dockerd cannot be reached the last
    set stays for ``down_grace`` seconds, then an empty set is published (no daemon, no proof).
    ``on_connect`` (e.g. ``lambda: ensure_networks(spec)``) runs after every (re)connect, before
    the relist: the long-running agent uses it to recreate networks on a fresh dockerd.
    """

    def __init__(
        self,
        host: str,
        *,
        mesh: str | None = None,
        url: str | None = None,
        relist: float = 30.0,
        down_grace: float = 5.0,
        on_connect: Callable[[], object] | None = None,
        log: Callable[[str], None] = _log,
    ) -> None:
        self.host, self.mesh, self.url = host, mesh, url
        self.relist, self.down_grace = relist, down_grace
        self.on_connect, self.log = on_connect, log
        self._stream: Any = None
        self._lock = threading.Lock()
        self._last: tuple[Endpoint, ...] | None = None
        self.relists = 0  # how many full relists (for tests and status)

    def _publish(self, publish: Publish, endpoints: tuple[Endpoint, ...]) -> None:
        if endpoints != self._last:
            self._last = endpoints
            publish(endpoints)

    def _relist(self, api: Any) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        self.relists += 1
        vpc_of = vpc_networks(api.networks(), self.mesh)
        by_id: dict[str, dict[str, Any]] = {}
        for c in api.containers():
            try:
                by_id[c["Id"]] = api.inspect_container(c["Id"])
            except _errors():  # gone between list and inspect
                continue
        return vpc_of, by_id

    def _set(self, vpc_of: Mapping[str, str], by_id: Mapping[str, Any]) -> tuple[Endpoint, ...]:
        return endpoints_from_inspect(self.host, by_id.values(), vpc_of)

    def run(self, publish: Publish, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self._closer, args=(stop,), daemon=True)
        watcher.start()
        backoff, down_since = 0.5, None
        while not stop.is_set():
            try:
                api = client(self.url, timeout=10)
                api.ping()
                if down_since is not None:
                    self.log("dockerd is back")
                down_since, backoff = None, 0.5
                if self.on_connect is not None:
                    self.on_connect()
                self._follow(api, publish, stop)
            except (DockerUnavailable, *_errors()) as exc:  # type: ignore[misc]
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    self.log(f"dockerd unreachable ({_explain(exc)}); retrying")
                if now - down_since >= self.down_grace:
                    self._publish(publish, ())
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _closer(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            if self._stream is not None:
                self._stream.close()

    def _follow(self, api: Any, publish: Publish, stop: threading.Event) -> None:
        while not stop.is_set():
            since = int(time.time()) - 1
            vpc_of, by_id = self._relist(api)
            self._publish(publish, self._set(vpc_of, by_id))
            until = time.time() + self.relist
            stream = api.events(
                since=since, until=int(until) + 1, decode=True,
                filters={"type": ["container", "network"]},
            )  # fmt: skip
            with self._lock:
                self._stream = stream
            if stop.is_set():
                stream.close()
                return
            try:
                for ev in stream:
                    if stop.is_set():
                        return
                    if self._handle(api, ev, vpc_of, by_id):
                        break  # our networks changed: relist
                    self._publish(publish, self._set(vpc_of, by_id))
            finally:
                with self._lock:
                    self._stream = None
                stream.close()
            if time.time() < until - 0.5:
                # the stream ended early: dockerd went away or restarted. Reconnect (run's loop:
                # backoff while it is down, on_connect and a full relist when it is back)
                return

    def _handle(
        self, api: Any, ev: Mapping[str, Any], vpc_of: Mapping[str, str],
        by_id: dict[str, dict[str, Any]],
    ) -> bool:  # fmt: skip
        """Apply one event; True when a full relist is needed."""
        kind, action = ev.get("Type"), str(ev.get("Action") or "")
        actor = ev.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        if kind == "network":
            if action in ("create", "destroy"):
                return True
            if action not in ("connect", "disconnect"):
                return False
            if attrs.get("name") not in vpc_of:
                return False
            cid = attrs.get("container")
        elif kind == "container":
            if not (action in _CONTAINER_ACTIONS or action.startswith("health_status")):
                return False
            cid = actor.get("ID") or ev.get("id")
        else:
            return False
        if not cid:
            return False
        try:
            by_id[cid] = api.inspect_container(cid)
        except _errors():
            by_id.pop(cid, None)
        return False


def discovery_for(spec: HostSpec, state: Any, url: str | None = None) -> DockerDiscovery | None:
    """The Discovery for the agent daemon on a Docker host, or None (then the daemon reads its
    static endpoints file). A Docker host is one whose socket exists or where dockerd is
    installed: a dockerd that starts after the daemon is picked up by the reconnect loop, and
    every (re)connect first makes the networks of the last applied spec (``state.applied_spec()``
    when ``state`` has it) match."""
    from vpcctl.core import run

    if not present(url) and run.which("dockerd") is None:
        return None

    def networks() -> None:
        current = state.applied_spec() if hasattr(state, "applied_spec") else None
        for line in ensure_networks(current or spec, url).lines():
            _log(line)

    return DockerDiscovery(spec.host, mesh=spec.mesh, url=url, on_connect=networks)
