"""`vpcctl down` and `vpcctl host rm --purge`: tearing hosts down over SSH (`agent down` there)."""

from __future__ import annotations

import functools

import typer

from vpcctl.cli.app import inventory_path
from vpcctl.cli.output import info, warn
from vpcctl.cli.push import JSON_OPT, PARALLEL_OPT, WAIT_OPT, _converge, _summary
from vpcctl.cli.remote import Connect, ssh_options

FORGET_OPT = typer.Option(
    False, "--forget-key", help="Also delete each host's private key (it must `join` again)."
)


@ssh_options(accept_new=False)
def down(
    ctx: typer.Context,
    hosts: list[str] = typer.Argument(None, help="Hosts to tear down (default: all)."),
    forget_key: bool = FORGET_OPT,
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Tear hosts down over SSH: `agent down` on each removes everything vpcctl owns there
    (WireGuard interface, tunnel, bridges, routes, nftables table, DOCKER-USER rules, Docker
    networks it made, resolver, agent daemon, state files) and nothing else, and puts the
    sysctls it changed back. The inventory is not changed: `vpcctl up` builds it all again.

    On a terminal: progress and the per-host table; otherwise output only when something was
    removed or failed (or --json). Exit 0 when every host is torn down, 4 when some failed (the
    table says why), 1 when all did.

    [bold]Examples[/]

      vpcctl down

      vpcctl down vps2 --json

      vpcctl down nas --forget-key && vpcctl host rm nas
    """
    from vpcctl.admin import fanout

    work = functools.partial(fanout.down_one, forget_key=forget_key)
    _converge(ctx, hosts or [], connect, parallel, as_json, wait, work, "nothing to remove")


def remove_host(
    ctx: typer.Context, name: str, *, force: bool, connect: Connect, wait: float
) -> None:
    """`host rm NAME --purge`: the edit is checked first (a refusal changes nothing anywhere),
    then the host is torn down, and only then is it removed from the inventory. A host that
    could not be torn down stays in the inventory (exit 4) unless ``force``."""
    from vpcctl.admin import edits, fanout, inventory
    from vpcctl.core.errors import ExitCode

    path = inventory_path(ctx)
    inv = inventory.load(path)
    edits.rm_host(inv, name, force=force)
    result = fanout.for_each([inv.hosts[name]], connect, fanout.down_one, parallel=1)[0]
    _summary([result], "nothing to remove")
    if not result.ok and not force:
        info(f"error: host {name} was not torn down; the inventory is unchanged")
        info(f"hint: fix that and run it again, or add --force to remove {name} from the "
             "inventory anyway (then tear it down by hand: `vpcctl agent down` there)")  # fmt: skip
        raise typer.Exit(int(ExitCode.PARTIAL))
    inventory.update(path, lambda inv: edits.rm_host(inv, name, force=force), wait)
    if result.ok:
        info(f"removed host {name}: torn down, and out of the inventory")
    else:
        warn(f"removed host {name} from the inventory although it was NOT torn down (--force)")
    info("next: `vpcctl up` removes it from every peer")


def register(app: typer.Typer) -> None:
    app.command()(down)
