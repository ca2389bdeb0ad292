"""`vpcctl rotate-psk` and `vpcctl host rotate-key`: key lifecycle on the hosts, over SSH.

Keys are made on the hosts; this side only carries public keys and sealed preshared keys (in
memory, never printed) and decides the order (README "Preshared keys", "Rotating a host key").
"""

from __future__ import annotations

from typing import Any

import typer

from vpcctl.cli.app import inventory_path
from vpcctl.cli.output import print_json
from vpcctl.cli.push import JSON_OPT, PARALLEL_OPT, WAIT_OPT, _exit, _summary
from vpcctl.cli.remote import Connect, ssh_options


def _report(results: list[Any], as_json: bool) -> None:
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        _summary(results, "up to date")
    _exit(results)


def _apply_in_order(
    ctx: typer.Context,
    connect: Any,
    parallel: int,
    wait: float,
    *,
    first: str | None = None,
    old_key: str = "",
    only: set[str] | None = None,
) -> list[Any]:
    """Under the inventory's lock: the preshared keys (new ones for the pairs of ``only`` when
    given), then every host's apply; ``first`` alone before all the others."""
    from vpcctl.admin import fanout, inventory, pairkeys
    from vpcctl.core.lock import locked

    path = inventory_path(ctx)
    with locked(path, wait, what="the mesh (another `vpcctl up` runs)"):
        inv = inventory.load(path)
        specs = fanout.specs_json(inv)
        names = sorted(inv.hosts)
        sealed: dict[str, dict[str, str]] = {}
        failed: list[Any] = []
        if inv.mesh.psk:
            sealed, failed = pairkeys.offer(
                inv, names, connect, parallel, only=only, rotate=only is not None
            )
        if first is None:
            work, reach = pairkeys.up_work(specs, sealed), connect
            order = names
        else:
            ordered = pairkeys.FirstThenAll(
                inv.hosts[first], old_key, min(len(names), parallel) - 1, connect, specs, sealed
            )
            work, reach = ordered.work, ordered.connect
            order = [first, *(n for n in names if n != first)]
        results = fanout.for_each([inv.hosts[n] for n in order], reach, work, parallel=parallel)
    return pairkeys.merge(results, failed)


@ssh_options(accept_new=False)
def rotate_psk(
    ctx: typer.Context,
    hosts: list[str] = typer.Argument(None, help="New keys for these hosts' pairs (default: all)."),
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Give host pairs new WireGuard preshared keys (mesh with `psk = true`).

    Each pair's new key is made on one of its two hosts and reaches the other sealed to its
    WireGuard key; both ends set it within a second of each other and the tunnels keep their
    sessions (the next handshake uses the new key). Nothing secret is shown or written here.

    [bold]Examples[/]

      vpcctl rotate-psk

      vpcctl rotate-psk vps1 --json
    """
    from vpcctl.admin import fanout, inventory
    from vpcctl.core.errors import ValidationError

    inv = inventory.load(inventory_path(ctx))
    fanout.select(inv, hosts or [])  # unknown names: an error before anything happens
    if not inv.mesh.psk:
        raise ValidationError(
            f"mesh {inv.mesh.name} has no preshared keys to rotate",
            "turn them on first: `vpcctl mesh set --psk && vpcctl up`",
        )
    only = set(hosts) if hosts else set(inv.hosts)
    _report(_apply_in_order(ctx, connect, parallel, wait, only=only), as_json)


def _next_key(host: Any, t: Any) -> Any:
    from vpcctl.admin import fanout

    fanout.check_version(host, t)
    done = t.run(fanout.agent_argv(host, "agent", "keygen", "--rotate", "--json"))
    data = fanout._json(host, done, "agent keygen --rotate")
    public = fanout._field(host, "agent keygen --rotate", data, "public_key", str)
    return fanout.HostResult(host.name, ok=True, changed=True, data={"public_key": public})


@ssh_options(accept_new=False)
def rotate_key(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The host whose WireGuard key is replaced."),
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Replace a host's WireGuard key: a new key made on the host, every peer told.

    The host makes its next key beside the current one; the inventory records the new public
    key; the host switches to it first, then every peer swaps the old public key for the new one
    (in parallel). Its packets wait in WireGuard's queue meanwhile (README "Rotating a host key"
    has the measured gap). Running it again after a failure finishes the rotation.

    [bold]Examples[/]

      vpcctl host rotate-key vps1

      vpcctl host rotate-key nas --json
    """
    from vpcctl.admin import edits, fanout, inventory
    from vpcctl.core.errors import AgentError

    path = inventory_path(ctx)
    host = fanout.select(inventory.load(path), [name])[0]
    if host.public_key is None:
        raise AgentError(f"host {name} has no key yet", f"run `vpcctl join {name}` first")
    made = fanout.for_each([host], connect, _next_key, parallel=1)[0]
    if not made.ok:
        raise AgentError(f"{name}: no new key made ({made.error}); nothing changed", made.hint)
    public = made.data["public_key"]
    inventory.update(path, lambda inv: edits.set_host(inv, name, public_key=public), wait)
    results = _apply_in_order(ctx, connect, parallel, wait, first=name, old_key=host.public_key)
    if not as_json:
        from vpcctl.cli.output import info

        info(f"host {name}: new public key {public}")
    _report(results, as_json)


def register(app: typer.Typer, host_app: typer.Typer) -> None:
    app.command("rotate-psk")(rotate_psk)
    host_app.command("rotate-key")(rotate_key)
