"""Issue 10 items 3-5 through the real typer app (and a few real processes): options, DNS
questions, files and paths that are hostile or broken. Every refusal is one ``error:`` line and
one ``hint:`` line, the documented exit code, and the inventory byte-for-byte unchanged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.cli.conftest import VPCCTL, process_env
from vpcctl.admin import inventory
from vpcctl.cli.commands import app
from vpcctl.core.lock import locked


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args), prog_name="vpcctl")


def refused(result: Result, code: int, says: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert ("Traceback" not in result.stderr and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    assert says in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# 4. options


@pytest.mark.parametrize(
    "args",
    [
        ["vpc", "add", "x", "--cidr", "10.9.0.0/16", "--wait", "-1"],
        ["vpc", "add", "x", "--cidr", "10.9.0.0/16", "--wait", "nan"],
        ["vpc", "add", "x", "--cidr", "10.9.0.0/16", "--wait", "inf"],
        ["container", "rm", "prod/db-1", "--wait", "-0.5"],
        ["up", "--timeout", "-1"],
        ["up", "--timeout", "nan"],
        ["up", "--connect-timeout", "inf"],
        ["plan", "--parallel", "0"],
        ["sync", "--parallel", "-3"],
        ["status", "--timeout", "-inf"],
    ],
)
def test_numbers_must_be_finite_and_non_negative(
    runner: CliRunner, net: Path, args: list[str]
) -> None:
    before = net.read_bytes()
    refused(run(runner, *args), 2, args[-2])
    assert net.read_bytes() == before


def test_conflicting_or_empty_set_is_a_usage_error(runner: CliRunner, net: Path) -> None:
    before = net.read_bytes()
    refused(
        run(runner, "host", "set", "vps1", "--endpoint", "192.0.2.9:1", "--no-endpoint"),
        2,
        "contradict",
    )
    refused(run(runner, "host", "set", "vps1"), 2, "nothing to set")
    assert net.read_bytes() == before


def test_a_unique_name_needs_no_vpc(runner: CliRunner, net: Path) -> None:
    result = run(runner, "container", "rm", "db-2", "--force")
    assert result.exit_code == 0, result.stderr
    assert "prod/db-2" not in inventory.load(net).containers
    refused(run(runner, "container", "rm", "web-1"), 1, "in several VPCs: prod, staging")
    refused(run(runner, "container", "rm", "nope"), 1, "no container named 'nope'")
    assert run(runner, "service", "rm", "cache").exit_code == 0
    assert "staging/cache" not in inventory.load(net).services


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["container", "ls", "--vpc", "nope"], "no VPC named 'nope'"),
        (["container", "ls", "--host", "nope"], "no host named 'nope'"),
        (["service", "ls", "--vpc", "nope"], "no VPC named 'nope'"),
    ],
)
def test_filters_naming_nothing_are_errors(
    runner: CliRunner, net: Path, args: list[str], says: str
) -> None:
    refused(run(runner, *args), 1, says)


@pytest.mark.parametrize(
    ("version", "says"),
    [("true", "unsupported schema version"), ("1.0", "unsupported"), ('"1"', "unsupported")],
)
def test_version_must_be_the_integer_1(
    runner: CliRunner, net: Path, version: str, says: str
) -> None:
    net.write_text(net.read_text().replace("version = 1", f"version = {version}"))
    refused(run(runner, "check"), 1, says)


# ---------------------------------------------------------------------------------------------
# 3. resolve


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["resolve", "db", "--type", "BOGUS"], "not a record type"),
        (["resolve", "db", "--type", "A\x1b[31m"], "\\x1b"),
        (["resolve", ""], "is not a DNS name"),
        (["resolve", "."], "is not a DNS name"),
        (["resolve", "db\x1b[2J"], "\\x1b[2J"),
        (["resolve", "a" * 254], "is not a DNS name"),
    ],
)
def test_resolve_refuses_bad_questions(
    runner: CliRunner, net: Path, args: list[str], says: str
) -> None:
    result = run(runner, *args)
    refused(result, 1, says)
    assert "\x1b" not in result.stderr


def test_arpa_domains_are_refused(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "vpc.toml"
    refused(
        run(runner, "-i", str(path), "init", "x", "--domain", "10.in-addr.arpa"),
        1,
        "reverse-DNS",
    )
    assert not path.exists()


# ---------------------------------------------------------------------------------------------
# 5. files and paths


def test_invalid_utf8_and_deep_nesting_are_one_error(runner: CliRunner, net: Path) -> None:
    net.write_bytes(b'version = 1\n# \xff\xfe\n[mesh]\nname = "x"\n')
    for command in (["check"], ["host", "ls"], ["vpc", "add", "x", "--cidr", "10.9.0.0/16"]):
        refused(run(runner, *command), 1, "not UTF-8")
    net.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    for command in (["check"], ["render", "nas"]):
        refused(run(runner, *command), 1, "nested too deeply")
    assert net.read_text().startswith("x = [[[")


@pytest.mark.parametrize("where", ["", "/", "."])
def test_empty_root_or_directory_paths(runner: CliRunner, net: Path, where: str) -> None:
    refused(run(runner, "-i", where, "host", "ls"), 1, "is a directory")
    refused(run(runner, "-i", where, "check"), 1, "is a directory")
    refused(run(runner, "-i", where, "init", "x"), 1, "is a directory")


def test_unreadable_file_is_one_error(runner: CliRunner, net: Path, tmp_path: Path) -> None:
    """Root reads whatever the mode says, so as root the command runs in a forked child with the
    effective uid of nobody, on a copy in a directory nobody may enter."""
    if os.geteuid() != 0:
        net.chmod(0)
        try:
            refused(run(runner, "host", "ls"), 1, "cannot read")
        finally:
            net.chmod(0o644)
        return
    where = Path(tempfile.mkdtemp(prefix="vpcctl-unreadable-"))
    try:
        where.chmod(0o755)
        copy = where / "vpc.toml"
        copy.write_bytes(net.read_bytes())
        # the same command once as root first: every module it needs is imported before the
        # child drops to nobody (who may not read the interpreter's own library here)
        assert run(runner, "-i", str(copy), "host", "ls").exit_code == 0
        copy.chmod(0)
        code, _out, err, clean = _as_nobody(lambda: run(runner, "-i", str(copy), "host", "ls"))
        assert code == 1 and clean, (code, err)
        lines = err.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and "cannot read" in lines[0]
        assert lines[1].startswith("hint: "), err
        assert copy.read_bytes() == net.read_bytes()
    finally:
        shutil.rmtree(where)


def _as_nobody(invoke: Callable[[], Result]) -> tuple[int, str, str, bool]:
    """Run ``invoke`` in a forked child whose effective uid and gid are nobody's (65534)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(r)
            os.setegid(65534)
            os.seteuid(65534)
            res = invoke()
            clean = res.exception is None or isinstance(res.exception, SystemExit)
            os.write(w, json.dumps([res.exit_code, res.stdout, res.stderr, clean]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0 and data, "the unprivileged child failed"
    code, out, err, clean = json.loads(data)
    return int(code), str(out), str(err), bool(clean)


def test_read_only_directory_is_one_error(runner: CliRunner, net: Path, tmp_path: Path) -> None:
    # root ignores the mode bits: make the write fail the same way with a file for a directory
    before = net.read_bytes()
    lock = inventory.lock_path(net)
    lock.unlink(missing_ok=True)
    lock.mkdir()
    try:
        refused(run(runner, "vpc", "add", "x", "--cidr", "10.9.0.0/16"), 1, "lock")
    finally:
        lock.rmdir()
    assert net.read_bytes() == before
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    refused(run(runner, "-i", str(blocked / "vpc.toml"), "init", "x"), 1, str(blocked))


def test_a_gitignore_that_is_a_directory_does_not_break_init(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").mkdir()
    result = run(runner, "-i", str(tmp_path / "vpc.toml"), "init", "x")
    assert result.exit_code == 0, result.stderr
    assert "warning: " in result.stderr and ".gitignore" in result.stderr
    assert inventory.load(tmp_path / "vpc.toml").mesh.name == "x"


def test_init_ignores_the_lock_and_temp_files_in_git(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert run(runner, "-i", str(tmp_path / "vpc.toml"), "init", "x").exit_code == 0
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines == [".vpc.toml.lock", ".vpc.toml.*.tmp"]


def test_a_symlinked_inventory_is_written_through(runner: CliRunner, net: Path) -> None:
    real = net.parent / "real" / "vpc.toml"
    real.parent.mkdir()
    inventory.lock_path(net).unlink()
    net.rename(real)
    net.symlink_to(real)
    result = run(runner, "vpc", "add", "x", "--cidr", "10.9.0.0/16")
    assert result.exit_code == 0, result.stderr
    assert net.is_symlink() and net.resolve() == real
    assert "x" in inventory.load(real).vpcs
    assert (real.parent / ".vpc.toml.lock").exists()
    assert not (net.parent / ".vpc.toml.lock").exists()


def test_a_killed_writer_s_temp_file_is_cleaned_by_the_next(runner: CliRunner, net: Path) -> None:
    stale = net.parent / ".vpc.toml.abc123.tmp"
    stale.write_text("half a file")
    assert run(runner, "vpc", "add", "x", "--cidr", "10.9.0.0/16").exit_code == 0
    assert not stale.exists()
    assert sorted(p.name for p in net.parent.iterdir() if p.name.startswith(".")) == [
        ".vpc.toml.lock"
    ]


def test_sigint_exits_130_without_a_traceback(net: Path) -> None:
    """A real process interrupted while it waits for the lock (and one while it starts)."""
    env = process_env()
    with locked(net):
        proc = subprocess.Popen(
            [*VPCCTL, "vpc", "add", "x", "--cidr", "10.9.0.0/16", "--wait", "30"],
            cwd=net.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)  # imported, parsed, now waiting for the lock
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() in ("interrupted", ""), err
    early = subprocess.Popen(
        [*VPCCTL, "host", "ls"], cwd=net.parent, env=env, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.05)  # most likely still importing
    early.send_signal(signal.SIGINT)
    _, err = early.communicate(timeout=20)
    # -SIGINT: the signal came before Python set up its handler (the shell shows 130 too).
    # Under heavy load it can land while the interpreter itself still imports `site`, before any
    # vpcctl code runs: CPython then reports "Fatal Python error: init_import_site" with its own
    # frozen-importlib trace, which no program can prevent (README: limits of Ctrl-C).
    if early.returncode != 0 and err.startswith("Fatal Python error: init_import_site"):
        return
    assert early.returncode in (0, 130, -signal.SIGINT) and "Traceback" not in err, err
