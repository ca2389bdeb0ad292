"""`vpcctl graph`: the mesh as a tree, Graphviz source, or a picture (Graphviz's `dot`)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import typer

from vpcctl.cli.app import inventory_path
from vpcctl.cli.remote import Connect, ssh_options

GRAPHVIZ_HINT = "install Graphviz: apt-get install graphviz (or use --format dot|text)"


def _validate(fmt: str, output: Path | None, inventory: Path) -> None:
    from vpcctl.admin.graph import FORMATS
    from vpcctl.core.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}",
                         "e.g. vpcctl graph --format svg -o mesh.svg")  # fmt: skip
    if fmt == "png" and output is None:
        raise UsageError("--format png writes a binary picture: it needs -o FILE",
                         "e.g. vpcctl graph --format png -o mesh.png")  # fmt: skip
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise UsageError(f"-o {output}: not a file in an existing directory",
                         "give a file path, e.g. -o docs/mesh.svg")  # fmt: skip
    if output is not None and output.resolve() == inventory.resolve():
        raise UsageError(f"-o {output}: that is the inventory; a picture would replace it",
                         "give another file, e.g. -o mesh.svg")  # fmt: skip


def _live(inv: Any, connect: Connect) -> Any:
    """(statuses per answering host, live endpoints, hosts that could not be asked)."""
    from vpcctl.admin import fanout
    from vpcctl.cli.objects import _ask_live
    from vpcctl.cli.output import warn

    results = fanout.for_each(fanout.select(inv, []), connect, fanout.status_one)
    statuses = {r.host: r.data.get("peers", []) for r in results if r.ok}
    down = {r.host for r in results if not r.ok}
    for r in results:
        if not r.ok:
            warn(f"{r.host}: no status: {r.error}")
    endpoints, _, failed = _ask_live(inv, [], connect)
    return statuses, endpoints, sorted(down | set(failed))


def _tree(g: Any) -> Any:
    from rich.tree import Tree

    from vpcctl.admin.graph import backend_text, host_lines, link_text, service_lines, title

    root = Tree(title(g) + (" (live)" if g.live else ""))
    hosts = root.add("hosts")
    for h in g.hosts:
        first, *rest = host_lines(h)
        node = hosts.add(
            f"{first}  {'  '.join(rest[:2])}" + ("  UNREACHABLE" if h.reachable is False else "")
        )
        for line in rest[2:]:
            if line != "UNREACHABLE":
                node.add(f"slice {line}")
    links = root.add("links")
    for link in g.links:
        links.add(f"{link.a} <-> {link.b}: {link_text(link)}")
    services = root.add("services")
    for s in g.services:
        node = services.add("  ".join(service_lines(s)))
        for b in s.backends:
            node.add(f"{backend_text(b)} on {b.host or '?'}")
        if not s.backends:
            node.add("no backends")
    return root


def _emit(text: str, output: Path | None) -> None:
    """To stdout, or to ``output`` created 0600 (the picture names every endpoint and address)."""
    from vpcctl.core.keys import write_secret

    if output is None:
        sys.stdout.write(text)
    else:
        write_secret(output, text.encode())


def _render(g: Any, fmt: str, output: Path | None) -> None:
    from vpcctl.admin.graph import to_dot

    if fmt == "text":
        from rich.console import Console

        if output is None:
            Console(highlight=False, soft_wrap=True).print(_tree(g))
        else:
            text = io.StringIO()
            Console(file=text, highlight=False, soft_wrap=True, width=200).print(_tree(g))
            _emit(text.getvalue(), output)
        return
    dot = to_dot(g)
    if fmt == "dot":
        _emit(dot, output)
        return
    if output is None:
        sys.stdout.write(_dot(fmt, dot, None))
        return
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # 0600 before dot writes a byte
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        _dot(fmt, dot, tmp)
        os.replace(tmp, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _dot(fmt: str, dot: str, output: Path | None) -> str:
    from vpcctl.core import run
    from vpcctl.core.errors import ProgramError

    argv = ["dot", f"-T{fmt}", *(["-o", str(output)] if output is not None else [])]
    done = run.run(argv, input=dot, what="graph", hint=GRAPHVIZ_HINT)
    if not done.ok:
        raise ProgramError(f"graph: dot failed: {done.stderr.strip()[:200]}", GRAPHVIZ_HINT)
    return done.stdout


@ssh_options(accept_new=False, timeout=60.0)
def graph(
    ctx: typer.Context,
    fmt: str = typer.Option("text", "--format", "-f", help="text, dot, svg or png."),
    live: bool = typer.Option(
        False, "--live", help="Ask the hosts (SSH): handshake freshness, live backends."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to FILE."),
    *,
    connect: Connect,
) -> None:
    """The mesh as a picture: hosts (endpoint or behind NAT), mesh
    links, each host's VPC slices, services and their backends.

    Offline it shows the inventory. With --live each link is coloured
    by its WireGuard handshake (green fresh, orange stale, red none)
    from `status`, and services show the backends the hosts' agent
    daemons see; a host that cannot be asked is marked, exit code 4.
    svg and png need Graphviz's `dot` (apt-get install graphviz).

    [bold]Examples[/]

      vpcctl graph

      vpcctl graph --format svg -o mesh.svg

      vpcctl graph --live --format dot | dot -Tpng > mesh.png
    """
    from vpcctl.admin import graph as g
    from vpcctl.admin import inventory, views

    path = inventory_path(ctx)
    _validate(fmt, output, path)
    inv = inventory.load(path)
    statuses, endpoints, down = None, (), []
    if live:
        statuses, endpoints, down = _live(inv, connect)
    picture = g.build(inv, views.service_backends(inv, endpoints), statuses, down)
    _render(picture, fmt, output)
    if down:
        from vpcctl.core.errors import ExitCode

        raise typer.Exit(int(ExitCode.PARTIAL))


def register(app: typer.Typer) -> None:
    app.command("graph")(graph)
