"""The typer application, its shared options and the one error boundary."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from vpcctl.core.errors import ExitCode, VpcctlError

if TYPE_CHECKING:
    from vpcctl.admin.transport import Transport
    from vpcctl.core.model import Host


class Group(TyperGroup):
    """The only place where errors become exit codes (README "Exit codes")."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VpcctlError as exc:
            _report(exc)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            ctx.exit(int(ExitCode.OK))


def _report(exc: VpcctlError) -> None:
    sys.stderr.write(f"error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"hint: {exc.hint}\n")
    sys.stderr.flush()


def new_app(help_text: str, **kw: Any) -> typer.Typer:
    return typer.Typer(
        cls=Group,
        help=help_text,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **kw,
    )


@dataclass
class State:
    """What the root command hands its subcommands. ``connect`` is the adapter seam of the SSH
    commands: None means SSH (paramiko); tests pass ``CliRunner.invoke(app, ..., obj=State(
    connect=fake))`` with a function implementing the same ``Connect`` signature."""

    inventory: Path | None = None
    connect: Callable[[Host], Transport] | None = None


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def inventory_path(ctx: typer.Context) -> Path:
    from vpcctl.admin import inventory

    return inventory.find(state(ctx).inventory)
