"""`vpcctl client add|rm|ls`: roaming peers (laptop, phone) with no SSH, behind a gateway host."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from vpcctl.cli.app import inventory_path, new_app, nonnegative
from vpcctl.cli.output import info, print_json, table

client_app = new_app(
    "Roaming clients: WireGuard peers without SSH (laptops, phones) behind a gateway host."
)

JSON_OPT = typer.Option(False, "--json", help="Print JSON (for scripts).")
WAIT_OPT = typer.Option(
    30.0, "--wait", help="Seconds to wait for the inventory lock.", callback=nonnegative
)


def _png_target(png: Path | None) -> Path | None:
    """The PNG file to create: its directory must exist and the file must not (never replaced)."""
    from vpcctl.core.errors import UsageError

    if png is None:
        return None
    text = str(png)
    if not text or not text.isprintable():
        raise UsageError(f"--png: {text!r} is not a file name", "e.g. --png laptop.png")
    if os.path.lexists(png):
        raise UsageError(
            f"--png: {png} already exists", "pick a new file name (it is never replaced)"
        )
    if not png.parent.is_dir():
        raise UsageError(
            f"--png: no directory {png.parent}", "create it first, or pick another path"
        )
    return png


@client_app.command("add")
def client_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The client's name (a DNS label)."),
    via: str = typer.Option(..., "--via", help="Gateway host (must have an endpoint)."),
    vpcs: list[str] = typer.Option([], "--vpc", help="A VPC it may reach (repeat; default: all)."),
    png: Path | None = typer.Option(None, "--png", help="Also write the QR code as a PNG (0600)."),
    wait: float = WAIT_OPT,
) -> None:
    """Add a roaming client and print its wg-quick config ONCE, with a QR code.

    The keypair is made here, in memory. The printed config (and the --png file, mode 0600) is
    the only place its PRIVATE KEY ever appears, on purpose: it is not stored anywhere (the
    inventory keeps its public key and address only), so import it into the WireGuard app now.
    It takes effect at the next `vpcctl up`; `vpcctl client rm NAME` + `up` revokes it.

    [bold]Examples[/]

      vpcctl client add laptop --via vps1 --vpc prod

      vpcctl client add phone --via vps1 --vpc prod --vpc staging --png phone.png
    """
    from vpcctl.admin import edits, inventory, qr
    from vpcctl.admin.render import client_config
    from vpcctl.core.keys import PrivateKey
    from vpcctl.core.model import parse_label

    name = parse_label(name, "NAME", "client name")
    via = parse_label(via, "--via", "host name")
    chosen = tuple(parse_label(v, "--vpc", "VPC name") for v in vpcs)
    target = _png_target(png)
    key = PrivateKey.generate()
    path = inventory_path(ctx)
    inv = inventory.update(
        path, lambda inv: edits.add_client(inv, name, via, chosen, key.public_key()), wait
    )
    config = client_config(inv, name, key.to_base64())
    if target is not None:
        try:
            qr.write_png(target, config)
        except BaseException:
            inventory.update(path, lambda inv: edits.rm_client(inv, name), wait)
            raise
    sys.stdout.write(config + "\n" + qr.terminal(config))
    c = inv.clients[name]
    info(f"added client {name} ({c.address}) via {via}, VPCs {', '.join(c.vpcs)}"
         + (f"; QR code written to {target}" if target else ""))  # fmt: skip
    info("this config is shown once and holds the private key; run `vpcctl up` to activate it")


@client_app.command("rm")
def client_rm(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The client to revoke."),
    wait: float = WAIT_OPT,
) -> None:
    """Remove a roaming client: its key is revoked on its gateway at the next `vpcctl up`.

    [bold]Example[/]

      vpcctl client rm laptop && vpcctl up
    """
    from vpcctl.admin import edits, inventory

    inventory.update(inventory_path(ctx), lambda inv: edits.rm_client(inv, name), wait)
    info(f"removed client {name}; run `vpcctl up` to revoke it on its gateway")


def _client_json(inv: Any, c: Any) -> dict[str, Any]:
    from vpcctl.admin.render import client_dns

    return {
        "name": c.name, "via": c.via, "address": str(c.address), "public_key": c.public_key,
        "vpcs": list(c.vpcs), "dns": str(client_dns(inv, c)),
    }  # fmt: skip


@client_app.command("ls")
def client_ls(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List roaming clients (never their private keys: vpcctl does not have them).

    [bold]Examples[/]

      vpcctl client ls

      vpcctl client ls --json | jq -r '.[].address'
    """
    from vpcctl.admin import inventory

    inv = inventory.load(inventory_path(ctx))
    clients = [inv.clients[n] for n in sorted(inv.clients)]
    if as_json:
        print_json([_client_json(inv, c) for c in clients])
        return
    table(
        ["NAME", "ADDRESS", "VIA", "VPCS", "PUBLIC KEY"],
        [(c.name, c.address, c.via, ",".join(c.vpcs), c.public_key) for c in clients],
        "no clients yet: add one with `vpcctl client add NAME --via HOST`",
    )
