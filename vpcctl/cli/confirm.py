"""`vpcctl up --confirm SECONDS`: the window's validation, the run, the per-host table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import typer

from vpcctl.cli.output import print_json


def window(raw: str | None) -> float | None:
    """--confirm SECONDS, validated (10 to 3600; the lower bound is lowered by the test-only
    $VPCCTL_TEST_CONFIRM_MIN)."""
    if raw is None:
        return None
    from vpcctl.core.confirm import min_seconds, parse_seconds

    return parse_seconds(raw, "--confirm", min_seconds(os.environ))


def run(
    chosen: Sequence[Any], connect: Any, specs: dict[str, str], seconds: float, parallel: int,
    progress: Any, prepare: Any = None,
) -> list[Any]:  # fmt: skip
    """Apply every chosen host at once (each window starts at the end of its apply, so none
    may wait for a free slot), then confirm them over new connections."""
    import secrets

    from vpcctl.admin.confirm import confirmed_up
    from vpcctl.core.errors import UsageError

    if len(chosen) > parallel:
        raise UsageError(
            f"--confirm applies every host at once: {len(chosen)} hosts, --parallel {parallel}",
            f"raise --parallel to {len(chosen)}, or confirm fewer hosts at a time",
        )
    return confirmed_up(chosen, connect, specs, seconds, secrets.token_hex(8), prepare=prepare,
                        on_start=progress.start, on_done=progress.done)  # fmt: skip


def report(results: list[Any], as_json: bool) -> None:
    """The table (or --json), then the exit code: 4 if any host could not be confirmed."""
    from vpcctl.admin.confirm import exit_code
    from vpcctl.cli.output import table

    if as_json:
        print_json([r.to_json() for r in results])
    else:
        table(
            ["HOST", "APPLY", "CHANGES", "CONFIRM", "DETAIL"],
            [(r.host, "ok" if r.ok else
              ("no answer" if r.data.get("answered") is False else "FAILED"),
              len(r.changes), _confirm(r).get("text"), _detail(r)) for r in results],
            "no hosts",
        )  # fmt: skip
    code = exit_code(results)
    if code:
        raise typer.Exit(code)


def _confirm(r: Any) -> dict[str, Any]:
    """The host's confirm outcome (a host whose preshared-key offer failed has none: failed)."""
    return r.data.get("confirm") or {"state": "failed", "text": "failed"}


def _detail(r: Any) -> str:
    c = _confirm(r)
    if c.get("error"):
        return str(c["error"])
    if r.error:
        return str(r.error) + (f" (hint: {r.hint})" if r.hint else "")
    return "; ".join(r.changes[:3]) + (" ..." if len(r.changes) > 3 else "")
