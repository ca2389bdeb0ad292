"""`vpcctl host|vpc|container|service add/rm/ls`: thin commands over the pure inventory edits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vpcctl.cli.app import (
    AGENT_OPT,
    ENDPOINT_OPT,
    HOST_ARG,
    SSH_OPT,
    inventory_path,
    new_app,
    nonnegative,
    parse_host,
)
from vpcctl.cli.output import info, print_json, table, warn
from vpcctl.cli.remote import Connect, ssh_options

host_app = new_app("Hosts of the mesh: machines vpcctl configures over SSH.")
vpc_app = new_app("VPCs: private networks with their own CIDR, sliced per host.")
container_app = new_app("Containers: named workloads with an IP in their host's slice of a VPC.")
mesh_app = new_app("The mesh itself: settings every host shares.")
service_app = new_app("Services: a name + stable virtual IP, load-balanced to backends.")

JSON_OPT = typer.Option(False, "--json", help="Print JSON (for scripts).")
WAIT_OPT = typer.Option(
    30.0, "--wait", help="Seconds to wait for the inventory lock.", callback=nonnegative
)


def _complete(section: str) -> Any:
    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            from vpcctl.admin import inventory

            inv = inventory.load(inventory.find(None))
        except Exception:  # completion must never fail loudly
            return []
        names: list[str] = sorted(getattr(inv, section))
        if section in ("containers", "services"):
            names = sorted({k.split("/", 1)[1] for k in names})
        return [n for n in names if n.startswith(incomplete)]

    return complete


def _load(ctx: typer.Context) -> Any:
    from vpcctl.admin import inventory

    return inventory.load(inventory_path(ctx))


def _update(ctx: typer.Context, change: Any, wait: float = 30.0) -> Any:
    from vpcctl.admin import inventory

    path: Path = inventory_path(ctx)
    return inventory.update(path, change, wait)


def _vpc_and_name(name: str, vpc: str | None, what: str) -> tuple[str, str]:
    from vpcctl.core.errors import ValidationError
    from vpcctl.core.model import parse_label

    if "/" in name:
        v, _, n = name.partition("/")
        if vpc is not None and vpc != v:
            raise ValidationError(
                f"{what} {name!r} conflicts with --vpc {vpc}", "give the VPC once"
            )
        vpc, name = v, n
    if vpc is None:
        raise ValidationError(
            f"which VPC is {what} {name!r} in?", f"pass --vpc VPC or write VPC/{name}"
        )
    return parse_label(vpc, "--vpc", "VPC name"), parse_label(name, what, f"{what} name")


def _existing(ctx: typer.Context, name: str, vpc: str | None, what: str) -> tuple[str, str]:
    """Like :func:`_vpc_and_name`, but a name unique across VPCs needs no VPC (``rm db-1``)."""
    from vpcctl.core.errors import NotFoundError

    if "/" in name or vpc is not None:
        return _vpc_and_name(name, vpc, what)
    section = _load(ctx).containers if what == "container" else _load(ctx).services
    found = sorted(obj.vpc for obj in section.values() if obj.name == name)
    if len(found) > 1:
        raise NotFoundError(
            f"{what} {name!r} is in several VPCs: {', '.join(found)}",
            f"write it as VPC/{name}, e.g. {found[0]}/{name}",
        )
    if not found:
        raise NotFoundError(f"no {what} named {name!r} in any VPC", f"see `vpcctl {what} ls`")
    return found[0], name


def _known(inv: Any, vpc: str | None, host: str | None) -> None:
    """A filter naming a VPC or host that does not exist is a mistake, not an empty list."""
    from vpcctl.core.errors import NotFoundError

    if vpc is not None and vpc not in inv.vpcs:
        raise NotFoundError(f"--vpc: no VPC named {vpc!r}", "see `vpcctl vpc ls`")
    if host is not None and host not in inv.hosts:
        raise NotFoundError(f"--host: no host named {host!r}", "see `vpcctl host ls`")


# ---------------------------------------------------------------------------------------------
# hosts


@host_app.command("add")
def host_add(
    ctx: typer.Context,
    name: str = HOST_ARG,
    ssh: str = SSH_OPT,
    endpoint: str | None = ENDPOINT_OPT,
    public_key: str | None = typer.Option(
        None, "--public-key", help="WireGuard public key (normally recorded by `vpcctl join`)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Mesh address (default: next free)."
    ),
    agent: str | None = AGENT_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add a host to the mesh and allocate its mesh address and VPC slices.

    A host without --endpoint is behind NAT: others cannot dial it, so it keeps the tunnels
    alive itself (persistent keepalive).

    [bold]Examples[/]

      vpcctl host add vps1 --ssh root@203.0.113.10 --endpoint 203.0.113.10:51820

      vpcctl host add nas --ssh admin@nas.lan:2222
    """
    from vpcctl.admin import edits
    from vpcctl.core.model import parse_address, parse_public_key

    n, target, ep, agent = parse_host(name, ssh, endpoint, agent)
    key = parse_public_key(public_key, "--public-key") if public_key is not None else None
    addr = parse_address(address, "--address") if address is not None else None
    inv = _update(
        ctx,
        lambda inv: edits.add_host(
            inv, n, target, endpoint=ep, public_key=key, address=addr, agent=agent
        ),
        wait,
    )
    h = inv.hosts[n]
    if as_json:
        print_json(_host_json(h))
    else:
        slices = ", ".join(f"{v} {s}" for v, s in sorted(h.slices.items())) or "no VPCs yet"
        info(f"added host {n}: mesh address {h.address}; slices: {slices}")
        if h.endpoint is None:
            info(f"{n} has no endpoint: it is behind NAT and will keep its tunnels alive")


@host_app.command("set")
def host_set(
    ctx: typer.Context,
    name: str = typer.Argument(..., autocompletion=_complete("hosts")),
    public_key: str | None = typer.Option(None, "--public-key", help="New WireGuard public key."),
    endpoint: str | None = typer.Option(None, "--endpoint", help="New public HOST:PORT."),
    no_endpoint: bool = typer.Option(False, "--no-endpoint", help="The host is now behind NAT."),
    agent: str | None = AGENT_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Change a host's public key, endpoint or agent command.

    [bold]Examples[/]

      vpcctl host set vps1 --endpoint 198.51.100.7:51820

      vpcctl host set nas --agent "sudo -n /opt/vpcctl/bin/vpcctl"
    """
    from vpcctl.admin import edits
    from vpcctl.core.errors import UsageError
    from vpcctl.core.model import parse_agent, parse_endpoint, parse_public_key

    if endpoint is not None and no_endpoint:
        raise UsageError("--endpoint and --no-endpoint contradict each other", "give one of them")
    if public_key is None and endpoint is None and not no_endpoint and agent is None:
        raise UsageError(
            "nothing to set",
            "give --public-key KEY, --endpoint HOST:PORT, --no-endpoint or --agent COMMAND",
        )
    key = parse_public_key(public_key, "--public-key") if public_key is not None else None
    ep = parse_endpoint(endpoint, "--endpoint") if endpoint is not None else None
    command = parse_agent(agent, "--agent") if agent is not None else None
    _update(
        ctx,
        lambda inv: edits.set_host(
            inv, name, public_key=key, endpoint=ep, clear_endpoint=no_endpoint, agent=command
        ),
        wait,
    )
    info(f"updated host {name}")


@mesh_app.command("set")
def mesh_set(
    ctx: typer.Context,
    daemon: bool | None = typer.Option(
        None, "--daemon/--no-daemon", help="`vpcctl up` keeps the agent daemon running."
    ),
    daemon_port: int | None = typer.Option(
        None, "--daemon-port", help="Its TCP port on the mesh addresses (default 51821)."
    ),
    grace: int | None = typer.Option(
        None, "--grace", help="Seconds before an unreachable host's containers expire (1-3600)."
    ),
    mtu: int | None = typer.Option(
        None, "--mtu", help="WireGuard MTU: the underlay's MTU - 80 (default 1420; 1280-9000)."
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help='Prometheus metrics: "127.0.0.1:9586", "mesh:9586" or "off".'
    ),
    psk: bool | None = typer.Option(
        None, "--psk/--no-psk", help="A WireGuard preshared key per host pair (made on the hosts)."
    ),
    wait: float = WAIT_OPT,
) -> None:
    """Change the mesh's agent-daemon settings (the mesh table of running containers), the
    WireGuard MTU (the tunnel, VPC bridges and Docker networks get 20 less with routing ipip) and
    preshared keys.

    [bold]Examples[/]

      vpcctl mesh set --daemon && vpcctl up

      vpcctl mesh set --grace 8 --daemon-port 51900

      vpcctl mesh set --mtu 1320      # an underlay with MTU 1400 (PPPoE, a cloud VPC)

      vpcctl mesh set --metrics 127.0.0.1:9586

      vpcctl mesh set --psk && vpcctl up
    """
    from vpcctl.admin import edits
    from vpcctl.core.model import MTU_MAX, MTU_MIN, parse_int, parse_metrics, parse_port

    where = parse_metrics(metrics, "--metrics") if metrics is not None else None
    mx = (where or "off") if metrics is not None else None
    port = parse_port(daemon_port, "--daemon-port") if daemon_port is not None else None
    secs = parse_int(grace, "--grace", 1, 3600) if grace is not None else None
    size = parse_int(mtu, "--mtu", MTU_MIN, MTU_MAX) if mtu is not None else None
    inv = _update(
        ctx,
        lambda inv: edits.set_mesh(
            inv, daemon=daemon, daemon_port=port, grace=secs, mtu=size, metrics=mx, psk=psk
        ),
        wait,
    )
    m = inv.mesh
    info(f"updated mesh {m.name}: daemon {'on' if m.daemon else 'off'}, port {m.daemon_port}, "
         f"grace {m.grace} s, mtu {m.mtu}, metrics {m.metrics or 'off'}, "
         f"preshared keys {'on' if m.psk else 'off'} "
         "(apply with `vpcctl up`)")  # fmt: skip


@host_app.command("rm")
@ssh_options(accept_new=False)
def host_rm(
    ctx: typer.Context,
    name: str = typer.Argument(..., autocompletion=_complete("hosts")),
    force: bool = typer.Option(
        False,
        "--force",
        help="Also remove its containers; with --purge, remove it from the "
        "inventory even when it could not be torn down.",
    ),
    purge: bool = typer.Option(
        False, "--purge", help="First tear the host down over SSH (`agent down` there)."
    ),
    *,
    connect: Connect,
    wait: float = WAIT_OPT,
) -> None:
    """Remove a host from the inventory (its addresses are never reused by others' renumbering);
    the next `vpcctl up` removes it from every peer. With --purge it is torn down first, and an
    unreachable host (or a failed teardown) leaves the inventory unchanged (exit 4) unless
    --force.

    [bold]Examples[/]

      vpcctl host rm vps2 --purge && vpcctl up

      vpcctl host rm vps2 --purge --force    # vps2 is gone for good: remove it anyway
    """
    from vpcctl.admin import edits

    if purge:
        from vpcctl.cli import teardown

        teardown.remove_host(ctx, name, force=force, connect=connect, wait=wait)
        return
    _update(ctx, lambda inv: edits.rm_host(inv, name, force=force), wait)
    info(f"removed host {name}")


def _host_json(h: Any) -> dict[str, Any]:
    return {
        "name": h.name,
        "ssh": str(h.ssh),
        "address": str(h.address),
        "endpoint": h.endpoint,
        "behind_nat": h.endpoint is None,
        "public_key": h.public_key,
        "agent": h.agent,
        "slices": {v: str(s) for v, s in sorted(h.slices.items())},
    }


@host_app.command("ls")
def host_ls(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List hosts.

    [bold]Examples[/]

      vpcctl host ls

      vpcctl host ls --json | jq -r '.[].address'
    """
    inv = _load(ctx)
    hosts = [inv.hosts[n] for n in sorted(inv.hosts)]
    if as_json:
        print_json([_host_json(h) for h in hosts])
        return
    table(
        ["NAME", "ADDRESS", "SSH", "ENDPOINT", "PUBLIC KEY"],
        [
            (h.name, h.address, h.ssh, h.endpoint or "(behind NAT)", h.public_key or "(not joined)")
            for h in hosts
        ],
        "no hosts yet: add one with `vpcctl join NAME --ssh TARGET` or `vpcctl host add`",
    )


# ---------------------------------------------------------------------------------------------
# VPCs


@vpc_app.command("add")
def vpc_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="VPC name (a DNS label)."),
    cidr: str = typer.Option(..., "--cidr", help="The VPC's IPv4 CIDR, e.g. 10.100.0.0/16."),
    slice_prefix: int = typer.Option(24, "--slice-prefix", help="Size of each host's slice."),
    services: str | None = typer.Option(
        None, "--services", help="Service VIP range (default: the last slice-sized block)."
    ),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add a VPC; every host gets a slice of it.

    [bold]Example[/]

      vpcctl vpc add prod --cidr 10.100.0.0/16
    """
    from vpcctl.admin import edits
    from vpcctl.core.model import parse_label, parse_range

    n = parse_label(name, "NAME", "VPC name")
    net = parse_range(cidr, "--cidr")
    svc = parse_range(services, "--services") if services is not None else None
    inv = _update(
        ctx, lambda inv: edits.add_vpc(inv, n, net, slice_prefix=slice_prefix, services=svc), wait
    )
    v = inv.vpcs[n]
    from vpcctl.admin.limits import public_ranges

    for key, public in public_ranges(inv):
        if key == f"vpcs.{n}.cidr":
            warn(f"{public} is a public range: those internet addresses become unreachable here")
    if as_json:
        print_json(_vpc_json(inv, v))
    else:
        info(f"added VPC {n} {v.cidr}: service VIPs from {v.services}; {len(inv.hosts)} slices")


def _vpc_json(inv: Any, v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "cidr": str(v.cidr),
        "slice_prefix": v.slice_prefix,
        "services": str(v.services),
        "slices": {h.name: str(h.slices[v.name]) for h in inv.hosts.values() if v.name in h.slices},
    }


@vpc_app.command("rm")
def vpc_rm(
    ctx: typer.Context,
    name: str = typer.Argument(..., autocompletion=_complete("vpcs")),
    force: bool = typer.Option(False, "--force", help="Also remove its containers and services."),
    wait: float = WAIT_OPT,
) -> None:
    """Remove a VPC.

    [bold]Example[/]

      vpcctl vpc rm staging --force
    """
    from vpcctl.admin import edits

    _update(ctx, lambda inv: edits.rm_vpc(inv, name, force=force), wait)
    info(f"removed VPC {name}")


@vpc_app.command("ls")
def vpc_ls(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List VPCs.

    [bold]Example[/]

      vpcctl vpc ls --json
    """
    inv = _load(ctx)
    vpcs = [inv.vpcs[n] for n in sorted(inv.vpcs)]
    if as_json:
        print_json([_vpc_json(inv, v) for v in vpcs])
        return
    table(
        ["NAME", "CIDR", "SLICES", "SERVICE RANGE", "CONTAINERS", "SERVICES"],
        [
            (
                v.name,
                v.cidr,
                f"/{v.slice_prefix}",
                v.services,
                sum(1 for c in inv.containers.values() if c.vpc == v.name),
                sum(1 for s in inv.services.values() if s.vpc == v.name),
            )
            for v in vpcs
        ],
        "no VPCs yet: add one with `vpcctl vpc add NAME --cidr CIDR`",
    )


# ---------------------------------------------------------------------------------------------
# containers


@container_app.command("add")
def container_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Container name, or VPC/NAME."),
    vpc: str | None = typer.Option(
        None, "--vpc", help="The VPC.", autocompletion=_complete("vpcs")
    ),
    host: str = typer.Option(
        ..., "--host", help="Host it runs on.", autocompletion=_complete("hosts")
    ),
    ip: str | None = typer.Option(None, "--ip", help="Address (default: next free in the slice)."),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Declare a container and allocate its address in its host's slice.

    [bold]Example[/]

      vpcctl container add db-1 --vpc prod --host vps1
    """
    from vpcctl.admin import edits
    from vpcctl.core.model import parse_address, parse_label

    v, n = _vpc_and_name(name, vpc, "container")
    h = parse_label(host, "--host", "host name")
    addr = parse_address(ip, "--ip") if ip is not None else None
    inv = _update(ctx, lambda inv: edits.add_container(inv, n, v, h, addr), wait)
    c = inv.containers[f"{v}/{n}"]
    if as_json:
        print_json(_container_json(inv, c))
    else:
        info(f"added container {v}/{n} on {h}: {c.ip}")


def _container_json(inv: Any, c: Any) -> dict[str, Any]:
    return {
        "vpc": c.vpc,
        "name": c.name,
        "host": c.host,
        "ip": str(c.ip),
        "fqdn": f"{c.name}.{c.vpc}.{inv.mesh.domain}",
    }


@container_app.command("rm")
def container_rm(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="Container name, or VPC/NAME.", autocompletion=_complete("containers")
    ),
    vpc: str | None = typer.Option(None, "--vpc", autocompletion=_complete("vpcs")),
    force: bool = typer.Option(False, "--force", help="Also drop it from services' backends."),
    wait: float = WAIT_OPT,
) -> None:
    """Remove a container.

    [bold]Example[/]

      vpcctl container rm prod/db-2
    """
    from vpcctl.admin import edits

    v, n = _existing(ctx, name, vpc, "container")
    _update(ctx, lambda inv: edits.rm_container(inv, n, v, force=force), wait)
    info(f"removed container {v}/{n}")


LIVE_OPT = typer.Option(
    False, "--live", help="Also ask the hosts (over SSH) which containers run now."
)
VIA_OPT = typer.Option(
    [],
    "--via",
    help="With --live: ask only this host (its table holds the whole mesh's); repeatable.",
    autocompletion=_complete("hosts"),
)


def _ask_live(inv: Any, via: list[str], connect: Connect) -> tuple[Any, list[str], list[str]]:
    """Every asked host's live table -> (the running endpoints, the hosts that answered, the
    hosts that failed).

    Says on stderr which hosts could not be asked, and which answered without a daemon."""
    from vpcctl.admin import fanout, views
    from vpcctl.cli.output import warn

    results = fanout.for_each(fanout.select(inv, via), connect, fanout.table_one)
    tables = []
    failed = []
    for r in results:
        if r.ok:
            t = r.data["table"]
            tables.append(t)
            if not t.daemon:
                warn(
                    f"{r.host}: no agent daemon runs there: nothing live from it (`vpcctl agent run`)"
                )
        else:
            failed.append(r.host)
            hint = f" (hint: {r.hint})" if r.hint else ""
            warn(f"{r.host} could not be asked: {r.error}{hint}")
            tables.append(views.Table(host=r.host, error=r.error))
    live, notes = views.running(inv, tables)
    for n in notes:
        warn(n)
    if failed:
        warn(
            f"{len(failed)} of {len(results)} hosts could not be asked: containers only they "
            "know of may be missing"
        )
    return live, [r.host for r in results if r.ok], failed


def _offline_note(live: bool, what: str) -> None:
    if not live:
        info(f"declared {what} only (from the inventory); add --live to ask the hosts")


def _partial(failed: list[str]) -> None:
    from vpcctl.core.errors import ExitCode

    if failed:
        raise typer.Exit(int(ExitCode.PARTIAL))


@container_app.command("ls")
@ssh_options(accept_new=False, timeout=60.0)
def container_ls(
    ctx: typer.Context,
    vpc: str | None = typer.Option(
        None, "--vpc", help="Only this VPC.", autocompletion=_complete("vpcs")
    ),
    host: str | None = typer.Option(
        None, "--host", help="Only this host.", autocompletion=_complete("hosts")
    ),
    live: bool = LIVE_OPT,
    via: list[str] = VIA_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
) -> None:
    """List containers: declared ones, and with --live the running ones the hosts discovered.

    SOURCE says where a row comes from: "declared" (vpc.toml) or
    "discovered" (running in Docker on a VPC network, announced by its
    host). READY is the container's health (a HEALTHCHECK still starting
    or unhealthy = no). A host that cannot be asked is named on stderr and
    the exit code is 4.

    [bold]Examples[/]

      vpcctl container ls --vpc prod --json

      vpcctl container ls --live

      vpcctl container ls --live --via nas --json | jq '.[] | select(.source == "discovered")'
    """
    from vpcctl.admin import views

    inv = _load(ctx)
    _known(inv, vpc, host)
    failed: list[str] = []
    answered: list[str] = []
    endpoints = None
    if live:
        endpoints, answered, failed = _ask_live(inv, via, connect)
    rows = views.container_rows(inv, endpoints, answered)
    rows = [r for r in rows if (vpc is None or r.vpc == vpc) and (host is None or r.host == host)]
    if as_json:
        print_json([r.to_json(inv.mesh.domain) for r in rows])
    else:
        yes_no = {True: "yes", False: "no", None: None}
        table(
            [
                "VPC",
                "NAME",
                "HOST",
                "IP",
                "SOURCE",
                *(["RUNNING", "READY", "NOTE"] if live else []),
            ],
            [
                (
                    r.vpc,
                    r.name,
                    r.host,
                    r.ip,
                    r.source,
                    *([yes_no[r.running], yes_no[r.ready], r.note] if live else []),
                )
                for r in rows
            ],
            "no containers: add one with `vpcctl container add NAME --vpc VPC --host HOST`, "
            "or run one in Docker on a VPC network (see `vpcctl container ls --live`)",
        )
    _offline_note(live, "containers")
    _partial(failed)


# ---------------------------------------------------------------------------------------------
# services


@service_app.command("add")
def service_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Service name, or VPC/NAME."),
    vpc: str | None = typer.Option(None, "--vpc", autocompletion=_complete("vpcs")),
    # "[/" would start a rich markup closing tag (and crash --help): escape the brackets
    port: list[str] = typer.Option(..., "--port", help="\\[NAME=]PORT\\[/tcp|udp]; repeatable."),
    backend: list[str] = typer.Option(
        [],
        "--backend",
        help="Backend container (same VPC); repeatable.",
        autocompletion=_complete("containers"),
    ),
    selector: list[str] = typer.Option(
        [],
        "--selector",
        help="KEY=VALUE: running containers of the VPC with this label are backends too, "
        "wherever they run; repeatable (ANDed).",
    ),
    vip: str | None = typer.Option(None, "--vip", help="Virtual IP (default: next free)."),
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Add a service: a stable VIP DNAT-ed to its backends wherever they run.

    Backends are the declared containers given with --backend, plus every
    running container of the VPC, on any host, whose labels match all
    --selector terms and that is ready (not unhealthy or still starting by
    its Docker HEALTHCHECK; no HEALTHCHECK counts as ready). The VIP never
    changes while backends come and go.

    [bold]Examples[/]

      vpcctl service add db --vpc prod --port postgres=5432/tcp --selector app=db

      vpcctl service add db --vpc prod --port postgres=5432/tcp --backend db-1 --backend db-2

      vpcctl service add api --vpc prod --port 8080 --selector app=api --selector tier=blue
    """
    from vpcctl.admin import edits
    from vpcctl.core.model import (
        make_selector,
        parse_address,
        parse_label,
        parse_portspec,
        parse_selector_term,
    )

    v, n = _vpc_and_name(name, vpc, "service")
    ports = tuple(parse_portspec(p, "--port") for p in port)
    backends = tuple(parse_label(b, "--backend", "container name") for b in backend)
    terms = make_selector((parse_selector_term(t, "--selector") for t in selector), "--selector")
    addr = parse_address(vip, "--vip") if vip is not None else None
    inv = _update(ctx, lambda inv: edits.add_service(inv, n, v, ports, backends, addr, terms), wait)
    s = inv.services[f"{v}/{n}"]
    if as_json:
        print_json(_service_json(inv, s))
    else:
        info(f"added service {v}/{n}: VIP {s.vip} -> {_backends_text(s)}")


def _backends_text(s: Any) -> str:
    from vpcctl.core.model import selector_text

    parts = list(s.backends)
    if s.selector:
        parts.append(f"containers labelled {selector_text(s.selector)}")
    return ", ".join(parts) or "no backends yet"


def _service_json(inv: Any, s: Any) -> dict[str, Any]:
    return {
        "vpc": s.vpc,
        "name": s.name,
        "vip": str(s.vip),
        "ports": [str(p) for p in s.ports],
        "backends": list(s.backends),
        "selector": dict(s.selector),
        "fqdn": f"{s.name}.{s.vpc}.{inv.mesh.domain}",
    }


@service_app.command("rm")
def service_rm(
    ctx: typer.Context,
    name: str = typer.Argument(..., autocompletion=_complete("services")),
    vpc: str | None = typer.Option(None, "--vpc", autocompletion=_complete("vpcs")),
    wait: float = WAIT_OPT,
) -> None:
    """Remove a service.

    [bold]Example[/]

      vpcctl service rm prod/db
    """
    from vpcctl.admin import edits

    v, n = _existing(ctx, name, vpc, "service")
    _update(ctx, lambda inv: edits.rm_service(inv, n, v), wait)
    info(f"removed service {v}/{n}")


@service_app.command("ls")
@ssh_options(accept_new=False, timeout=60.0)
def service_ls(
    ctx: typer.Context,
    vpc: str | None = typer.Option(None, "--vpc", autocompletion=_complete("vpcs")),
    live: bool = LIVE_OPT,
    via: list[str] = VIA_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
) -> None:
    """List services; with --live, also each service's live backends.

    Live backends are the declared backends and the ready running
    containers the selector picks, wherever they run: what every host's
    DNAT set for the VIP converges to.

    [bold]Examples[/]

      vpcctl service ls --json

      vpcctl service ls --live --vpc prod
    """
    from vpcctl.admin import views
    from vpcctl.core.model import selector_text

    inv = _load(ctx)
    _known(inv, vpc, None)
    failed: list[str] = []
    backends: Any = None
    if live:
        endpoints, _, failed = _ask_live(inv, via, connect)
        backends = views.service_backends(inv, endpoints)
    rows = sorted(inv.services.values(), key=lambda s: (s.vpc, s.name))
    rows = [s for s in rows if vpc is None or s.vpc == vpc]
    if as_json:
        out = []
        for s in rows:
            entry = _service_json(inv, s)
            if backends is not None:
                entry["live_backends"] = [b.to_json() for b in backends[(s.vpc, s.name)]]
            out.append(entry)
        print_json(out)
    else:
        columns = ["VPC", "NAME", "VIP", "PORTS", "BACKENDS", "SELECTOR"]
        if backends is not None:
            columns.append("LIVE BACKENDS")
        table(
            columns,
            [
                (
                    s.vpc,
                    s.name,
                    s.vip,
                    " ".join(str(p) for p in s.ports),
                    " ".join(s.backends),
                    selector_text(s.selector),
                    *(
                        [" ".join(str(b) for b in backends[(s.vpc, s.name)]) or "(none)"]
                        if backends is not None
                        else []
                    ),
                )
                for s in rows
            ],
            "no services: add one with `vpcctl service add NAME --vpc VPC --port 80 --backend C`",
        )
    _offline_note(live, "backends")
    _partial(failed)
