"""`vpcctl doctor [HOST...]`: every host's checks, each failure with its exact fix."""

from __future__ import annotations

import math
import sys
from typing import Any

import typer

from vpcctl.cli.app import inventory_path
from vpcctl.cli.output import print_json
from vpcctl.cli.push import JSON_OPT, PARALLEL_OPT
from vpcctl.cli.remote import Connect, ssh_options


def _stale(value: float) -> float:
    from vpcctl.core.errors import UsageError

    if not (math.isfinite(value) and 0 < value <= 86400):
        raise UsageError(f"--stale {value:g}: not between 0 and 86400 seconds",
                         "give the handshake age that counts as stale, e.g. --stale 180")  # fmt: skip
    return value


def _print(results: list[Any]) -> None:
    for r in results:
        if not r.ok:
            sys.stdout.write(f"{r.host}: UNREACHABLE: {r.error}\n")
            if r.hint:
                sys.stdout.write(f"        fix: {r.hint}\n")
            continue
        checks = r.data["checks"]
        bad = sum(c["status"] == "fail" for c in checks)
        sys.stdout.write(f"{r.host}: {'all checks pass' if not bad else f'{bad} failing'}\n")
        for c in checks:
            sys.stdout.write(f"  {c['status']:<4}  {c['name']:<18} {c['detail']}\n")
            if c["fix"]:
                sys.stdout.write(f"        fix: {c['fix']}\n")


@ssh_options(accept_new=False, timeout=120.0)
def doctor(
    ctx: typer.Context,
    hosts: list[str] = typer.Argument(None, help="Hosts to diagnose (default: all)."),
    stale: float = typer.Option(
        180.0, "--stale", help="Seconds after which a peer's handshake is stale."
    ),
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
) -> None:
    """Diagnose hosts: WireGuard, ipip, nftables, forwarding, each peer's reachability and
    path MTU, clock skew, agent version, resolver, daemon, Docker networks and container DNS.
    Every failing check prints the exact command that fixes it.

    Exit 0 when every check passes, 1 when one fails, 4 when a host could not be reached.

    [bold]Examples[/]

      vpcctl doctor

      vpcctl doctor vps1 --json | jq '.[].checks[] | select(.status == "fail")'
    """
    from vpcctl.admin import fanout, inventory
    from vpcctl.admin.doctor import doctor_one
    from vpcctl.core.errors import ExitCode

    wait = _stale(stale)
    inv = inventory.load(inventory_path(ctx))
    results = fanout.for_each(
        fanout.select(inv, hosts or []),
        connect,
        lambda h, t: doctor_one(h, t, wait),
        parallel=parallel,
    )
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        _print(results)
    if any(not r.ok for r in results):
        raise typer.Exit(int(ExitCode.PARTIAL))
    if any(r.changed for r in results):
        raise typer.Exit(int(ExitCode.ERROR))
