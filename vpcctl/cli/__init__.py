"""Command-line entry point.

``vpcctl agent ...`` (the host side, run on every host on every sync) is dispatched to the lean
argparse front-end before the typer application, rich and pydantic are imported."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        argv = sys.argv[1:]
        if argv[:1] == ["agent"]:
            from vpcctl.cli.agent import run

            sys.exit(run(argv[1:]))
        from vpcctl.cli.commands import app

        app(prog_name="vpcctl")
    except KeyboardInterrupt:
        # Ctrl-C outside a command (while Python imports, or parses the command line): the
        # command's own boundary (cli/app.py) handles it everywhere else
        sys.stderr.write("interrupted\n")
        sys.exit(130)
