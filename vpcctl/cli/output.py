"""Output helpers: data on stdout, diagnostics on stderr, JSON for scripts.

rich is imported only when a table is printed: the agent runs from cron and over SSH, where
start-up time counts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def info(message: str) -> None:
    sys.stderr.write(message + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    if not rows:
        info(empty)
        return
    from rich.console import Console
    from rich.table import Table

    out = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 240)
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*("-" if v is None or v == "" else str(v) for v in row))
    out.print(t)
