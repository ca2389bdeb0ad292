"""Root command: `vpcctl`. Commands are thin: parse options into typed values, call the pure core
or one shell module, print. Errors become exit codes in one place (cli/app.py)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer

from vpcctl import __version__
from vpcctl.cli.app import inventory_path, new_app, report, state
from vpcctl.cli.clients import client_app
from vpcctl.cli.dns import dns_app
from vpcctl.cli.objects import container_app, host_app, mesh_app, service_app, vpc_app
from vpcctl.cli.output import info, print_json, warn
from vpcctl.core import model

app = new_app(
    "vpcctl: a private, encrypted, cloud-style VPC across your own machines.\n\n"
    "Hosts form a WireGuard mesh; VPC traffic is routed as IPIP inside it; containers find each "
    "other by name. The whole network lives in one git-friendly inventory, vpc.toml.\n\n"
    "[bold]Start[/]: vpcctl init home && vpcctl vpc add prod --cidr 10.100.0.0/16"
)
app.add_typer(host_app, name="host")
app.add_typer(mesh_app, name="mesh")
app.add_typer(vpc_app, name="vpc")
app.add_typer(container_app, name="container")
app.add_typer(service_app, name="service")
app.add_typer(dns_app, name="dns")
app.add_typer(client_app, name="client")

from vpcctl.cli import push as _push  # noqa: E402
from vpcctl.cli import teardown as _teardown  # noqa: E402

_push.register(app, host_app)
_teardown.register(app)

from vpcctl.cli import graph as _graph  # noqa: E402

_graph.register(app)

from vpcctl.cli.doctor import doctor as _doctor  # noqa: E402

app.command()(_doctor)

from vpcctl.cli import keys as _keys  # noqa: E402

_keys.register(app, host_app)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"vpcctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    inventory: Path | None = typer.Option(
        None,
        "-i",
        "--inventory",
        help="Inventory file (default: $VPCCTL_INVENTORY, else vpc.toml here or in a parent).",
        envvar=None,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state(ctx).inventory = inventory


@app.command()
def init(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mesh name (a DNS label)."),
    mesh_cidr: str = typer.Option(
        model.DEFAULT_MESH_CIDR, "--mesh-cidr", help="Host addresses on the mesh."
    ),
    domain: str = typer.Option(model.DEFAULT_DOMAIN, "--domain", help="DNS domain of the mesh."),
    port: int = typer.Option(
        model.DEFAULT_PORT, "--port", help="WireGuard UDP port on every host."
    ),
    interface: str = typer.Option(
        model.DEFAULT_INTERFACE, "--interface", help="WireGuard interface name."
    ),
    routing: str = typer.Option(
        model.DEFAULT_ROUTING,
        "--routing",
        help='"ipip" (default) or "wireguard" (kernels without ipip).',
    ),
    psk: bool = typer.Option(
        False, "--psk", help="A WireGuard preshared key per host pair (made on the hosts)."
    ),
) -> None:
    """Create a new inventory (vpc.toml in this directory, or -i PATH).

    [bold]Examples[/]

      vpcctl init home

      vpcctl init home --psk

      vpcctl init lab --mesh-cidr 10.91.0.0/24 --routing wireguard
    """
    from vpcctl.admin import edits, inventory
    from vpcctl.core.errors import ValidationError
    from vpcctl.core.model import (
        ROUTINGS,
        parse_domain,
        parse_ifname,
        parse_label,
        parse_port,
        parse_range,
    )

    if routing not in ROUTINGS:
        raise ValidationError(
            f"--routing: {routing!r} is not a routing mode", 'use "ipip" or "wireguard"'
        )
    inv = edits.new(
        parse_label(name, "NAME", "mesh name"),
        parse_range(mesh_cidr, "--mesh-cidr"),
        port=parse_port(port, "--port"),
        interface=parse_ifname(interface, "--interface"),
        domain=parse_domain(domain, "--domain"),
        routing=routing,
        psk=psk,
    )
    path = inventory.init_path(state(ctx).inventory)
    inventory.create(path, inv)
    info(f"created {path} for mesh {name} ({mesh_cidr}, {routing} routing)")
    from vpcctl.core.errors import InventoryError

    try:
        ignored = inventory.ignore_lock_file(path)
    except InventoryError as exc:
        warn(f"{exc.message}; {exc.hint}")
        ignored = None
    if ignored:
        info(
            f"added {inventory.lock_path(path).name} and {inventory.temp_pattern(path)} "
            f"to {ignored}"
        )
    info("next: `vpcctl join HOST --ssh root@HOST` for each machine, then `vpcctl vpc add`")


@app.command()
def check(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate the inventory only: syntax, types, overlaps, duplicates (e.g. after a git merge).

    Exit 0 when valid, 1 with one line per problem otherwise. Use it as a pre-commit hook.

    [bold]Example[/]

      vpcctl check && git commit -am "add vps3"
    """
    from vpcctl.admin import inventory
    from vpcctl.core.errors import ExitCode

    path = inventory_path(ctx)
    inv, problems, notes, canonical = inventory.check_file(path)
    if as_json:
        print_json(
            {
                "ok": not problems,
                "problems": [{"message": p.message, "hint": p.hint} for p in problems],
                "warnings": notes,
                "canonical": canonical,
            }
        )
    else:
        for p in problems:
            report(p)
        for n in notes:
            warn(n)
        if inv is not None and not problems:
            info(
                f"{path}: ok ({len(inv.hosts)} hosts, {len(inv.vpcs)} VPCs, "
                f"{len(inv.containers)} containers, {len(inv.services)} services)"
            )
            if not canonical:
                info(
                    "note: the file is not in canonical form; the next vpcctl write will rewrite it"
                )
    if problems:
        raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def render(
    ctx: typer.Context,
    host: str = typer.Argument(..., help="Host to render."),
    fmt: str = typer.Option("json", "--format", "-f", help='"json" (the HostSpec) or "wg-quick".'),
) -> None:
    """Print a host's desired state: the HostSpec the agent applies, or a wg-quick config.

    [bold]Examples[/]

      vpcctl render vps1 > vps1.json

      vpcctl render nas --format wg-quick | wg-quick strip /dev/stdin
    """
    from vpcctl.admin import inventory
    from vpcctl.admin.render import render as do_render
    from vpcctl.admin.render import wg_quick
    from vpcctl.core.errors import ValidationError
    from vpcctl.core.spec import to_json

    if fmt not in ("json", "wg-quick"):
        raise ValidationError(f"--format: {fmt!r} is not a format", 'use "json" or "wg-quick"')
    inv = inventory.load(inventory_path(ctx))
    spec = do_render(inv, host)
    sys.stdout.write(to_json(spec) if fmt == "json" else wg_quick(spec))


@app.command()
def resolve(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="Name to look up, e.g. db, db.prod, db.prod.vpc.internal."
    ),
    source: str | None = typer.Option(
        None, "--from", help="Ask as this container (VPC/NAME or NAME) or from inside this VPC."
    ),
    qtype: str = typer.Option("A", "--type", "-t", help="A, PTR, SRV, SOA, NS, ANY."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show what the resolver will answer, straight from the inventory.

    Without --from the question comes from the host itself (every VPC's full names, host names).

    [bold]Examples[/]

      vpcctl resolve db --from prod/web-1

      vpcctl resolve db.prod.vpc.internal

      vpcctl resolve _postgres._tcp.db --from prod --type SRV
    """
    from ipaddress import IPv4Address

    from vpcctl.admin import inventory
    from vpcctl.admin.render import zone_data
    from vpcctl.core import names
    from vpcctl.core.errors import ExitCode, ValidationError
    from vpcctl.dns import zone

    inv = inventory.load(inventory_path(ctx))
    client = _asker(inv, source)
    qt = qtype.upper()
    if qt not in RESOLVE_TYPES:
        raise ValidationError(
            f"--type: {qtype!r} is not a record type the resolver answers",
            f"use one of {', '.join(RESOLVE_TYPES)}",
        )
    stripped = name.rstrip(".")
    if not stripped or names.too_long(stripped) or not name.isprintable() or " " in name:
        raise ValidationError(
            f"NAME: {name!r} is not a DNS name",
            "give a name such as db, db.prod or db.prod.vpc.internal (at most 253 characters)",
        )
    if qt == "PTR" and not name.endswith(".in-addr.arpa"):
        with contextlib.suppress(ValueError):
            name = zone.reverse_name(IPv4Address(name))
    ans = zone.answer(zone.build(zone_data(inv)), name, qt, client)
    if as_json:
        print_json(
            {
                "name": name,
                "type": qt,
                "rcode": ans.rcode,
                "answers": [_rec_json(r) for r in ans.answers],
                "authority": [_rec_json(r) for r in ans.authority],
            }
        )
    else:
        _print_answer(name, qt, ans)
    if ans.rcode in ("NXDOMAIN", "REFUSED"):
        raise typer.Exit(int(ExitCode.ERROR))


RESOLVE_TYPES = ("A", "AAAA", "PTR", "SRV", "SOA", "NS", "ANY")


def _escaped(text: str) -> str:
    """Control characters (and anything unprintable) as escapes: a name can never reach the
    terminal as raw bytes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _asker(inv: Any, source: str | None) -> Any:
    """The address a question comes from: loopback, a container (VPC/NAME or NAME), or a VPC."""
    from ipaddress import IPv4Address

    from vpcctl.core.errors import NotFoundError

    if source is None:
        return IPv4Address("127.0.0.1")
    matches = [c for c in inv.containers.values() if source in (c.key, c.name)]
    if len(matches) == 1:
        return matches[0].ip
    if source in inv.vpcs:
        return inv.vpcs[source].cidr.network_address + 1
    if len(matches) > 1:
        raise NotFoundError(
            f"--from {source!r} names containers in several VPCs", "write it as VPC/NAME"
        )
    raise NotFoundError(f"--from {source!r} is no container or VPC", "see `vpcctl container ls`")


def _print_answer(name: str, qt: str, ans: Any) -> None:
    for r in ans.answers:
        sys.stdout.write(_escaped(r.text()) + "\n")
    if ans.rcode == "FORWARD":
        info(f"{name}: not in the zone; the resolver forwards it upstream")
    elif ans.rcode != "NOERROR":
        info(f"{name}: {ans.rcode}")
    elif not ans.answers:
        info(f"{name}: exists, but has no {qt} record")


def _rec_json(r: Any) -> dict[str, Any]:
    return {"name": r.name, "type": r.rtype, "ttl": r.ttl, "data": list(r.data)}


@app.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
def agent(ctx: typer.Context) -> None:
    """The host agent (keygen, apply, status, check, down, run, table), run on each host as root.

    [bold]Example[/]

      vpcctl agent apply /etc/vpcctl/spec.json --dry-run
    """
    from vpcctl.cli.agent import run

    raise typer.Exit(run(ctx.args))


def main() -> None:
    from vpcctl.cli import main as entry

    entry()


if __name__ == "__main__":
    main()
