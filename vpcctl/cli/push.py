"""`vpcctl join / plan / up / sync / status / host bootstrap`: the admin side over SSH."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from vpcctl.cli.app import (
    AGENT_OPT,
    ENDPOINT_OPT,
    HOST_ARG,
    SSH_OPT,
    inventory_path,
    nonnegative,
    parse_host,
    positive,
)
from vpcctl.cli.output import info, print_json
from vpcctl.cli.remote import Connect, ssh_options

PARALLEL_OPT = typer.Option(
    16, "--parallel", "-p", help="Hosts worked on at once.", callback=positive
)
JSON_OPT = typer.Option(False, "--json", help="Per-host results as JSON.")
CONFIRM_OPT = typer.Option(
    None,
    "--confirm",
    metavar="SECONDS",
    help="Confirmed apply: every host reverts by itself unless reconnected to and confirmed "
    "within SECONDS (10 to 3600).",
)
WAIT_OPT = typer.Option(
    60.0,
    "--wait",
    help="Seconds to wait for another vpcctl holding the lock.",
    callback=nonnegative,
)


class _Progress:
    """A rich progress display per host on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int, what: str) -> None:
        self.enabled = enabled
        self.live: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self.live = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total}"), transient=True,
                console=Console(stderr=True),
            )  # fmt: skip
            self.task = self.live.add_task(what, total=total)
            self.live.start()

    def start(self, host: str) -> None:
        if self.live:
            self.live.update(self.task, description=f"{host} ...")

    def done(self, result: Any) -> None:
        if self.live:
            self.live.advance(self.task)

    def stop(self) -> None:
        if self.live:
            self.live.stop()


def _summary(results: list[Any], verb: str) -> None:
    from vpcctl.cli.output import table

    table(
        ["HOST", "RESULT", "CHANGES", "SECONDS", "DETAIL"],
        [
            (
                r.host,
                "ok" if r.ok else "FAILED",
                len(r.changes),
                f"{r.seconds:.2f}",
                (r.error + (f" (hint: {r.hint})" if r.hint else "")) if not r.ok else
                ("; ".join(r.changes[:3]) + (" ..." if len(r.changes) > 3 else "")
                 if r.changes else f"{verb}"),
            )
            for r in results
        ],
        "no hosts",
    )  # fmt: skip


def _exit(results: list[Any]) -> None:
    from vpcctl.core.errors import ExitCode

    failed = [r for r in results if not r.ok]
    if failed and len(failed) == len(results):
        raise typer.Exit(int(ExitCode.ERROR))
    if failed:
        raise typer.Exit(int(ExitCode.PARTIAL))


def _psk_offers(inv: Any, chosen: list[Any], connect: Any, parallel: int) -> tuple[Any, Any]:
    """With preshared keys on: the sealed keys of the pairs among the chosen hosts (README)."""
    if not inv.mesh.psk:
        return {}, []
    from vpcctl.admin import pairkeys

    return pairkeys.offer(inv, [h.name for h in chosen], connect, parallel)


def _converge(
    ctx: typer.Context,
    hosts: list[str],
    connect: Any,
    parallel: int,
    as_json: bool,
    wait: float,
    work: Any = None,
    verb: str = "up to date",
    confirm: float | None = None,
) -> None:
    """Converge hosts (or do ``work`` on each: `down`). On a terminal: progress and a summary;
    otherwise output only when something changed or failed (cron mails only then), or with
    --json. ``confirm``: a confirmed apply with that window (cli/confirm.py)."""
    from vpcctl.admin import fanout, inventory, pairkeys
    from vpcctl.cli import confirm as confirmed
    from vpcctl.core.lock import locked

    path = inventory_path(ctx)
    tty = sys.stderr.isatty() and not as_json
    with locked(path, wait, what="the mesh (another `vpcctl up` or `down` runs)"):
        inv = inventory.load(path)
        chosen = fanout.select(inv, hosts)
        specs = fanout.specs_json(inv) if work is None else {}
        sealed, failed = _psk_offers(inv, chosen, connect, parallel) if work is None else ({}, [])
        progress = _Progress(tty, len(chosen), "converging" if work is None else verb)
        try:
            if confirm is not None:
                results = confirmed.run(chosen, connect, specs, confirm, parallel, progress,
                                        lambda h, t: pairkeys.accept(h, t, sealed.get(h.name)))  # fmt: skip
                confirmed.report(pairkeys.merge(results, failed), as_json)
                return
            results = fanout.for_each(
                chosen,
                connect,
                work or pairkeys.up_work(specs, sealed),
                parallel=parallel,
                on_start=progress.start,
                on_done=progress.done,
            )
        finally:
            progress.stop()
        results = pairkeys.merge(results, failed)
    if as_json:
        print_json([r.to_json() for r in results])
    elif tty or any(r.changed or not r.ok for r in results):
        _summary(results, verb)
    _exit(results)


@ssh_options()
def up(
    ctx: typer.Context,
    hosts: list[str] = typer.Argument(None, help="Hosts to converge (default: all)."),
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
    confirm: str | None = CONFIRM_OPT,
) -> None:
    """Push every host its HostSpec over SSH and converge it (in parallel).

    On a terminal: progress per host and a summary table. Otherwise it prints only when
    something changed or failed (or --json).

    Exit 0 when all converged, 4 when some hosts failed (the others still converge),
    1 when nothing could be done.

    With --confirm SECONDS each host keeps its previous state and reverts to it by itself
    unless this command reconnects (a new SSH connection) and confirms within SECONDS:
    an apply that cuts you off undoes itself. Exit 4 if any host could not be confirmed.

    [bold]Examples[/]

      vpcctl up

      vpcctl up vps1 vps2 --parallel 4

      vpcctl up --confirm 60
    """
    from vpcctl.cli.confirm import window

    seconds = window(confirm)
    _converge(ctx, hosts or [], connect, parallel, as_json, wait, confirm=seconds)


@ssh_options(accept_new=False)
def sync(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """`up` for cron: converge every host; print nothing when nothing changed and all is
    well (cron mails only on change or failure). Never accepts new host keys.

    [bold]Example[/] (crontab)

      */5 * * * * cd /srv/net && vpcctl sync
    """
    _converge(ctx, [], connect, parallel, as_json, wait)


def _print_plans(results: list[Any]) -> None:
    for r in results:
        if not r.ok:
            sys.stdout.write(f"{r.host}: FAILED: {r.error}\n")
        elif r.changes:
            sys.stdout.write(f"{r.host}: {len(r.changes)} changes\n")
            for c in r.changes:
                sys.stdout.write(f"  {c}\n")
        else:
            sys.stdout.write(f"{r.host}: up to date\n")


@ssh_options()
def plan(
    ctx: typer.Context,
    hosts: list[str] = typer.Argument(None, help="Hosts to plan (default: all)."),
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit 3 when anything would change."),
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
) -> None:
    """Show, per host, the changes `up` would make (the agent's dry run on the host itself).

    [bold]Examples[/]

      vpcctl plan

      vpcctl plan --exit-code || echo "changes pending"
    """
    from vpcctl.admin import fanout, inventory
    from vpcctl.core.errors import ExitCode

    inv = inventory.load(inventory_path(ctx))
    specs = fanout.specs_json(inv)
    results = fanout.for_each(
        fanout.select(inv, hosts or []),
        connect,
        lambda h, t: fanout.plan_one(h, t, specs[h.name]),
        parallel=parallel,
    )
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        _print_plans(results)
    _exit(results)
    if exit_code and any(r.changed for r in results):
        raise typer.Exit(int(ExitCode.CHANGES))


def _print_status(results: list[Any], names: list[str], mx: dict[str, dict[str, bool]]) -> None:
    from vpcctl.cli.output import table

    table(
        ["HOST", "REACHABLE", "VERSION", "PEERS FRESH", "DETAIL"],
        [
            (
                r.host,
                "yes" if r.ok else "no",
                r.data.get("version"),
                f"{sum(p['fresh'] for p in r.data.get('peers', []))}/{len(r.data.get('peers', []))}"
                if r.ok else None,
                r.error if not r.ok else None,
            )
            for r in results
        ],
        "no hosts",
    )  # fmt: skip
    sys.stdout.write("\nmesh (+ fresh handshake, . none):\n")
    sys.stdout.write("       " + " ".join(f"{n[:6]:>6}" for n in names) + "\n")
    for a in names:
        cells = " ".join(f"{'-' if a == b else ('+' if mx[a].get(b) else '.'):>6}" for b in names)
        sys.stdout.write(f"{a[:6]:>6} {cells}\n")


@ssh_options(accept_new=False)
def status(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
) -> None:
    """Per host: reachable, agent version, peers with handshake age and transfer; and a
    mesh matrix of the pairs with a fresh handshake (under 3 minutes).

    [bold]Example[/]

      vpcctl status --json | jq '.matrix'
    """
    from vpcctl.admin import fanout, inventory

    inv = inventory.load(inventory_path(ctx))
    results = fanout.for_each(
        fanout.select(inv, []),
        connect,
        fanout.status_one,
        parallel=parallel,
    )
    mx = fanout.matrix(results, inv)
    if as_json:
        print_json({"hosts": [r.to_json() for r in results], "matrix": mx})
    else:
        _print_status(results, sorted(inv.hosts), mx)
    _exit(results)


def _probe(ctx: typer.Context, name: str, ssh: str, endpoint: str | None, agent: str | None) -> Any:
    """The host as `join` is about to record it (validated; same --ssh as before if it exists)."""
    from vpcctl.admin import inventory
    from vpcctl.core.errors import ValidationError
    from vpcctl.core.model import Host

    n, target, ep, agent = parse_host(name, ssh, endpoint, agent)
    inv = inventory.load(inventory_path(ctx))
    existing = inv.hosts.get(n)
    if existing is not None and str(existing.ssh) != str(target):
        raise ValidationError(
            f"host {n} exists with --ssh {existing.ssh}",
            f"use the same target, or `vpcctl host rm {n}` first",
        )
    return Host(
        name=n, ssh=target, address=inv.mesh.cidr.network_address, endpoint=ep,
        agent=agent if agent is not None else (existing.agent if existing else None),
    ), existing is not None  # fmt: skip


def _record_join(ctx: typer.Context, probe: Any, key: str, wait: float) -> Any:
    """Write the joined host (new, or its key, endpoint and agent updated) into the inventory."""
    from vpcctl.admin import edits, inventory

    n, ep, agent = probe.name, probe.endpoint, probe.agent

    def change(inv: Any) -> Any:
        if n in inv.hosts:
            return edits.set_host(inv, n, public_key=key, endpoint=ep, agent=agent)
        return edits.add_host(inv, n, probe.ssh, endpoint=ep, public_key=key, agent=agent)

    return inventory.update(inventory_path(ctx), change, wait).hosts[n]


@ssh_options()
def join(
    ctx: typer.Context,
    name: str = HOST_ARG,
    ssh: str = SSH_OPT,
    endpoint: str | None = ENDPOINT_OPT,
    agent: str | None = AGENT_OPT,
    *,
    connect: Connect,
    as_json: bool = JSON_OPT,
    wait: float = WAIT_OPT,
) -> None:
    """Add a host: connect over SSH, check it (WireGuard, nftables, root or sudo, agent
    version), create its key there (`agent keygen`) and record the public key.

    Idempotent: joining again keeps the same key.

    [bold]Examples[/]

      vpcctl join vps1 --ssh root@203.0.113.10 --endpoint 203.0.113.10:51820 --accept-new

      vpcctl join nas --ssh admin@nas.lan
    """
    from vpcctl.admin import fanout

    probe, existed = _probe(ctx, name, ssh, endpoint, agent)
    t = connect(probe)
    try:
        result = fanout.check_one(probe, t)
    finally:
        t.close()
    key, wireguard = result.data["public_key"], result.data["check"]["wireguard"]
    h = _record_join(ctx, probe, key, wait)
    if as_json:
        print_json({"host": h.name, "address": str(h.address), "public_key": key,
                    "new_key": result.changed, "wireguard": wireguard})  # fmt: skip
    else:
        info(f"{'re-joined' if existed else 'joined'} {h.name}: mesh address {h.address}, "
             f"WireGuard {wireguard}, public key {key}")  # fmt: skip
        info("next: `vpcctl up` to converge the mesh")


@ssh_options()
def bootstrap(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Host to install vpcctl on."),
    prefix: str = typer.Option("/opt/vpcctl", "--prefix", help="Virtualenv on the host."),
    wheelhouse: Path | None = typer.Option(
        None,
        "--wheelhouse",
        help="Directory of dependency wheels to upload too (for hosts without PyPI access).",
    ),
    *,
    connect: Connect,
    wait: float = WAIT_OPT,
) -> None:
    """Install the running vpcctl version on a host (a venv at --prefix) and record it as
    that host's agent command.

    [bold]Examples[/]

      vpcctl host bootstrap vps1

      pip download -d wheels vpcctl && vpcctl host bootstrap nas --wheelhouse wheels
    """
    from vpcctl.admin import bootstrap as boot
    from vpcctl.admin import edits, fanout, inventory

    path = inventory_path(ctx)
    host = fanout.select(inventory.load(path), [name])[0]
    wheels = boot.collect(wheelhouse)
    t = connect(host)
    try:
        command = boot.install(t, wheels, prefix, offline=wheelhouse is not None)
    finally:
        t.close()
    inventory.update(path, lambda inv: edits.set_host(inv, name, agent=command), wait)
    info(f"installed vpcctl on {name}: agent command {command}")


def register(app: typer.Typer, host_app: typer.Typer) -> None:
    for command in (up, sync, plan, status, join):
        app.command()(command)
    host_app.command("bootstrap")(bootstrap)
