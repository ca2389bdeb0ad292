"""How a command reaches hosts: the SSH options, defined once, and the connector they make.

A command that talks to hosts takes a keyword-only ``connect`` parameter and is decorated with
:func:`ssh_options`: typer then shows the SSH options in its place (same order, same help), and
the command is handed the connector built from them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vpcctl.cli.app import nonnegative, state

if TYPE_CHECKING:
    from vpcctl.admin.transport import Transport
    from vpcctl.core.model import Host

Connect = Callable[["Host"], "Transport"]
Command = Callable[..., None]

CONNECT_OPT = typer.Option(
    10.0, "--connect-timeout", help="Seconds to wait for SSH to connect.", callback=nonnegative
)
TIMEOUT_OPT = typer.Option(
    300.0, "--timeout", help="Seconds a remote command may take.", callback=nonnegative
)
ACCEPT_OPT = typer.Option(
    False, "--accept-new", help="Record unknown SSH host keys (changed keys are always refused)."
)
KNOWN_OPT = typer.Option(
    None,
    "--known-hosts",
    envvar="VPCCTL_KNOWN_HOSTS",
    help="vpcctl's known-hosts file (default ~/.config/vpcctl/known_hosts).",
)


def connector(
    ctx: typer.Context, connect_timeout: float, timeout: float, accept_new: bool, known: Path | None
) -> Connect:
    """How the command reaches hosts: the connect function passed in through the root context's
    State (tests: a fake Transport), else SSH with these options (paramiko is loaded only when a
    host is connected to)."""
    passed_in = state(ctx).connect
    if passed_in is not None:
        return passed_in

    def connect(host: Host) -> Transport:
        from vpcctl.admin.ssh import SshOptions, default_known_hosts
        from vpcctl.admin.ssh import connect as ssh_connect

        opts = SshOptions(
            connect_timeout=connect_timeout,
            command_timeout=timeout,
            accept_new=accept_new,
            known_hosts=known or default_known_hosts(),
        )
        return ssh_connect(host.ssh, opts)

    return connect


def _option(name: str, kind: object, default: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)


def ssh_options(
    *, accept_new: bool = True, timeout: float | None = None
) -> Callable[[Command], Command]:
    """Give the command --connect-timeout, --timeout, --accept-new and --known-hosts in place
    of its ``connect`` parameter, and call it with the connector they make.

    ``accept_new=False``: no --accept-new (the command never records new host keys);
    ``timeout=SECONDS``: no --timeout (remote commands get that fixed limit)."""
    options = [_option("connect_timeout", float, CONNECT_OPT)]
    if timeout is None:
        options.append(_option("timeout", float, TIMEOUT_OPT))
    if accept_new:
        options.append(_option("accept_new", bool, ACCEPT_OPT))
    options.append(_option("known_hosts", Path | None, KNOWN_OPT))

    def wrap(command: Command) -> Command:
        sig = inspect.signature(command, eval_str=True)
        if "connect" not in sig.parameters:
            raise TypeError(f"{command.__name__}: @ssh_options needs a `connect` parameter")
        params = [
            q for p in sig.parameters.values() for q in (options if p.name == "connect" else [p])
        ]

        @functools.wraps(command)
        def run(ctx: typer.Context, **kwargs: Any) -> None:
            ssh = {o.name: kwargs.pop(o.name) for o in options}
            connect = connector(
                ctx,
                ssh["connect_timeout"],
                ssh["timeout"] if timeout is None else timeout,
                ssh.get("accept_new", False),
                ssh["known_hosts"],
            )
            command(ctx, connect=connect, **kwargs)

        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return run

    return wrap
