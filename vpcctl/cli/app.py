"""The typer application, its shared options and the one error boundary."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from vpcctl.core.errors import ExitCode, UsageError, VpcctlError

# click's UsageError (typer vendors click from 0.20 on): found through typer's public BadParameter
_ClickUsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)

if TYPE_CHECKING:
    from vpcctl.admin.transport import Transport
    from vpcctl.core.model import Host, SshTarget


class Group(TyperGroup):
    """The only place where errors become exit codes (README "Exit codes")."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _ClickUsageError as exc:
            _usage(ctx, exc)
        except VpcctlError as exc:  # an option callback refused a value
            report(exc)
            ctx.exit(int(exc.exit_code))
        raise AssertionError("unreachable")  # pragma: no cover

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VpcctlError as exc:
            report(exc)
            ctx.exit(int(exc.exit_code))
        except _ClickUsageError as exc:
            _usage(ctx, exc)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            ctx.exit(int(ExitCode.OK))
        except OSError as exc:
            # the last net under every file operation: a path the OS refuses is the user's to fix
            where = f"{exc.filename}: " if exc.filename else ""
            report(
                VpcctlError(
                    f"{where}{exc.strerror or exc}",
                    "check the path, its permissions and free space",
                )
            )
            ctx.exit(int(ExitCode.ERROR))


def _one_line(text: str) -> str:
    """Control characters made visible, so that one message is one line whatever it quotes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def report(exc: VpcctlError) -> None:
    """``error: MESSAGE`` and ``hint: HINT`` on stderr, each one line."""
    sys.stderr.write(f"error: {_one_line(exc.message)}\n")
    if exc.hint:
        sys.stderr.write(f"hint: {_one_line(exc.hint)}\n")
    sys.stderr.flush()


def _usage(ctx: Any, exc: Exception) -> None:
    """A click usage error as our one error line (exit 2); "no arguments" still shows the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    where = getattr(exc, "ctx", None) or ctx
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    sys.stderr.write(f"error: {_one_line(str(text))}\n")
    sys.stderr.write(f"hint: see `{_one_line(where.command_path)} --help`\n")
    sys.stderr.flush()
    ctx.exit(int(ExitCode.USAGE))


def _opt(param: typer.CallbackParam) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def nonnegative(param: typer.CallbackParam, value: float | None) -> float | None:
    """Option callback: a finite number of seconds, 0 or more (every --wait and timeout)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UsageError(
            f"{_opt(param)}: {value!r} is not a number of seconds",
            "use a finite number, 0 or more, e.g. 30",
        )
    return value


def _int_in(param: typer.CallbackParam, value: int | None, low: int) -> int | None:
    high = 2**31 - 1
    if value is not None and not low <= value <= high:
        raise UsageError(
            f"{_opt(param)}: {value!r} is out of range", f"use an integer from {low} to {high}"
        )
    return value


def positive(param: typer.CallbackParam, value: int | None) -> int | None:
    """Option callback: a count, 1 or more (--parallel)."""
    return _int_in(param, value, 1)


# the options that describe a host (`host add`, `host set`, `join`)
HOST_ARG = typer.Argument(..., help="Host name (a DNS label).")
SSH_OPT = typer.Option(..., "--ssh", help="[USER@]HOST[:PORT] or an ~/.ssh/config alias.")
ENDPOINT_OPT = typer.Option(
    None, "--endpoint", help="Public HOST:PORT others dial. Omit for a host behind NAT."
)
AGENT_OPT = typer.Option(
    None, "--agent", help='Command that runs vpcctl on the host (default "vpcctl").'
)


def parse_host(
    name: str, ssh: str, endpoint: str | None, agent: str | None
) -> tuple[str, SshTarget, str | None, str | None]:
    """NAME, --ssh, --endpoint and --agent, validated (the last two may be left out)."""
    from vpcctl.core.model import parse_agent, parse_endpoint, parse_label, parse_ssh

    return (
        parse_label(name, "NAME", "host name"),
        parse_ssh(ssh, "--ssh"),
        parse_endpoint(endpoint, "--endpoint") if endpoint is not None else None,
        parse_agent(agent, "--agent") if agent is not None else None,
    )


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
