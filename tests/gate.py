"""The one rule for a test that cannot run here: skip it, except under ``CI=true``, where a
skipped test would hide a broken CI machine, so it fails instead."""

from __future__ import annotations

import os
import shutil

import pytest


def require(problem: str | None) -> None:
    """Skip (or, with CI=true, fail) the calling test when ``problem`` is not None."""
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {problem}", pytrace=False)
    pytest.skip(problem)


def require_tools(*tools: str, path: str | None = None) -> None:
    """Skip (or, with CI=true, fail) unless every program in ``tools`` is on PATH."""
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    require(f"this test needs {', '.join(missing)}" if missing else None)
