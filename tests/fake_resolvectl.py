"""A fake ``resolvectl`` for machines without systemd-resolved (this project's and CI's): a shell
script that records its argv and keeps per-link settings in files, as resolved keeps them per link
(forgotten when the link is recreated: delete the files). Put first on PATH; the agent runs it
through vpcctl/core/run.py exactly as it would the real one."""

from __future__ import annotations

import os
from pathlib import Path

FAKE = r"""#!/bin/sh
echo "$*" >> "$FAKE_RESOLVED/argv"
case "$1" in
  status) exit "$(cat "$FAKE_RESOLVED/status_rc" 2>/dev/null || echo 0)" ;;
  dns|domain|default-route|nta)
    if [ $# -eq 2 ]; then
      printf 'Link 7 (%s): %s\n' "$2" "$(cat "$FAKE_RESOLVED/$1.$2" 2>/dev/null)"
    else
      what=$1; link=$2; shift 2
      [ -f "$FAKE_RESOLVED/fail.$what" ] && { echo "Failed to set $what: boom" >&2; exit 1; }
      echo "$*" > "$FAKE_RESOLVED/$what.$link"
    fi ;;
  revert) rm -f "$FAKE_RESOLVED"/*."$2" ;;
  *) exit 2 ;;
esac
"""


class FakeResolvectl:
    def __init__(self, where: Path) -> None:
        self.bin = where / "bin"
        self.dir = where / "resolved"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        exe = self.bin / "resolvectl"
        exe.write_text(FAKE)
        exe.chmod(0o755)

    def env(self, path: str) -> dict[str, str]:
        """The environment that puts it first on ``path``."""
        return {"PATH": f"{self.bin}{os.pathsep}{path}", "FAKE_RESOLVED": str(self.dir)}

    @property
    def argv(self) -> list[str]:
        log = self.dir / "argv"
        return log.read_text().splitlines() if log.exists() else []

    def link(self, what: str, link: str = "vb-prod") -> str | None:
        f = self.dir / f"{what}.{link}"
        return f.read_text().strip() if f.exists() else None

    def clear(self) -> None:
        (self.dir / "argv").unlink(missing_ok=True)
