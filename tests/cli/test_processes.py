"""Real processes: concurrent writers under the lock, and `vpcctl check` after real git merges."""

from __future__ import annotations

import json
import subprocess
import threading
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.builders import empty
from tests.cli.conftest import VPCCTL, error_lines, process_env
from tests.paths import ROOT
from vpcctl.admin import edits, inventory
from vpcctl.cli.commands import app
from vpcctl.core.errors import InventoryError
from vpcctl.core.model import SshTarget

WRITERS = 20


def vpcctl(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*VPCCTL, *args], cwd=cwd, env=process_env(), capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def test_concurrent_writers_all_land_and_the_file_is_never_torn(tmp_path: Path) -> None:
    path = tmp_path / "vpc.toml"
    inv = edits.add_vpc(empty(), "prod", IPv4Network("10.100.0.0/16"))
    inventory.create(path, edits.add_host(inv, "nas", SshTarget("nas.lan")))

    reads: list[int] = []
    torn: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # a reader takes no lock: it must always see a whole file
        seen = None
        while not stop.wait(0.001):
            st = path.stat()  # parse each version once (a write in place changes size or mtime)
            if (st.st_ino, st.st_size, st.st_mtime_ns) == seen:
                continue
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            text = path.read_text()
            try:
                reads.append(len(inventory.parse(text).containers))
            except InventoryError as exc:
                torn.append(f"{exc.message}\n{text}")

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        procs = [
            subprocess.Popen(
                [*VPCCTL, "container", "add", f"c-{i}", "--vpc", "prod", "--host", "nas", "--json"],
                cwd=tmp_path,
                env=process_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(WRITERS)
        ]
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    finally:
        stop.set()
        watcher.join()

    assert [rc for rc, _, _ in results] == [0] * WRITERS, [err for _, _, err in results]
    assert torn == []
    assert reads and reads == sorted(reads)  # the count only ever grows
    inv = inventory.load(path)
    assert sorted(inv.containers) == sorted(f"prod/c-{i}" for i in range(WRITERS))
    ips = [c.ip for c in inv.containers.values()]
    assert len(set(ips)) == WRITERS
    # each process printed the address it was given, and that is what the file holds
    printed = {json.loads(out)["name"]: json.loads(out)["ip"] for _, out, _ in results}
    assert printed == {c.name: str(c.ip) for c in inv.containers.values()}
    assert inventory.dump(inv) == path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vpc.toml.lock", "vpc.toml"]


def git(cwd: Path, *args: str) -> None:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
         *args],
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def cli(runner: CliRunner, *args: str, code: int = 0) -> Result:
    """In-process (fast) for the setup steps; the cwd is the repository."""
    result = runner.invoke(app, list(args), prog_name="vpcctl")
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> Path:
    repo = tmp_path / "net"
    repo.mkdir()
    monkeypatch.chdir(repo)
    git(repo, "init", "-q", "-b", "main")
    cli(runner, "init", "home")
    cli(runner, "vpc", "add", "prod", "--cidr", "10.100.0.0/16")
    cli(runner, "host", "add", "nas", "--ssh", "nas.lan")
    cli(
        runner,
        "host",
        "add",
        "vps1",
        "--ssh",
        "root@203.0.113.10",
        "--endpoint",
        "203.0.113.10:51820",
    )
    (repo / ".gitignore").write_text(".vpc.toml.lock\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


def test_check_catches_a_duplicate_address_from_a_clean_git_merge(
    repo: Path, runner: CliRunner
) -> None:
    # two branches each add a host; the tables sort apart, so git merges without a conflict
    _branch_adds_host(repo, runner, "alpha", "alpha", "alpha.lan", "add alpha")
    _branch_adds_host(repo, runner, "zeta", "zeta", "zeta.lan", "add zeta")
    git(repo, "merge", "-q", "--no-edit", "alpha")
    path = repo / "vpc.toml"
    text = path.read_text()
    assert "[hosts.alpha]" in text and "[hosts.zeta]" in text

    done = vpcctl(repo, "check", check=False)  # a real process: the real exit code
    assert done.returncode == 1 and done.stdout == ""
    assert error_lines(done.stderr) == [
        f"error: {path}: hosts.zeta.address: 10.90.0.3 is also the address of host alpha",
        f"error: {path}: hosts.zeta.slices.prod: 10.100.2.0/24 overlaps "
        "hosts.alpha.slices.prod (10.100.2.0/24)",
    ]
    assert "a merge?" in done.stderr
    # nothing writes over the broken file until it is fixed
    refused = cli(runner, "host", "add", "mini", "--ssh", "mini.lan", code=1)
    assert "10.90.0.3 is also the address" in refused.stderr
    assert path.read_text() == text
    # the fix the hint gives: remove the host (by hand, the file being invalid) and add it again
    path.write_text(text.replace(text[text.index("[hosts.zeta]") : text.index("[vpcs.prod]")], ""))
    cli(runner, "host", "add", "zeta", "--ssh", "zeta.lan")
    cli(runner, "check")
    assert str(inventory.load(path).hosts["zeta"].address) == "10.90.0.4"


def _branch_adds_host(
    repo: Path, runner: CliRunner, branch: str, host: str, ssh: str, message: str
) -> None:
    """A new branch off main that adds one host (committed); it stays checked out."""
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-qb", branch)
    cli(runner, "host", "add", host, "--ssh", ssh)
    git(repo, "commit", "-qam", message)


def _conflicting_branches(repo: Path, runner: CliRunner) -> None:
    """Branches ``one`` and ``two`` both add host vps2, differently; ``two`` is checked out."""
    _branch_adds_host(repo, runner, "one", "vps2", "root@198.51.100.20", "vps2 one way")
    _branch_adds_host(repo, runner, "two", "vps2", "admin@198.51.100.20", "vps2 another way")


def test_check_explains_a_table_duplicated_by_a_merge(repo: Path, runner: CliRunner) -> None:
    _conflicting_branches(repo, runner)
    # the merged text kept both sides' vps2 table
    path = repo / "vpc.toml"
    text = path.read_text()
    block = text[text.index("[hosts.vps2]") : text.index("[vpcs.prod]")]
    other = block.replace("admin@", "root@")
    path.write_text(text.replace(block, block + other))

    lines = path.read_text().splitlines()
    second = lines.index("[hosts.vps2]", lines.index("[hosts.vps2]") + 1) + 1

    done = vpcctl(repo, "check", check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {path}: Cannot declare ('hosts', 'vps2') twice (at line {second}, column 12)",
        "hint: a git merge may have added the same table twice: keep one (then `vpcctl check`)",
    ]


def test_check_explains_a_key_duplicated_by_a_merge(repo: Path, runner: CliRunner) -> None:
    _conflicting_branches(repo, runner)
    subprocess.run(["git", "merge", "-q", "one"], cwd=repo, capture_output=True, timeout=30)
    path = repo / "vpc.toml"
    text = path.read_text()
    assert "<<<<<<<" in text  # a conflict on the ssh line: resolved carelessly, keeping both
    path.write_text(
        "".join(
            ln for ln in text.splitlines(True) if ln[:7] not in ("<<<<<<<", "=======", ">>>>>>>")
        )
    )

    result = cli(runner, "check", code=1)
    assert result.stdout == ""
    assert result.stderr.splitlines()[0].startswith(
        f"error: {path}: Cannot overwrite a value (at line "
    )
    assert result.stderr.splitlines()[1] == "hint: fix the TOML syntax at that line"


def test_shell_completion_offers_commands_and_names_from_the_inventory(tmp_path: Path) -> None:
    """What bash gets from `vpcctl --install-completion`'s hook: commands, then host names."""
    import os
    import sys

    from vpcctl.admin import edits
    from vpcctl.core.model import SshTarget

    inv = empty(name="c")
    inv = edits.add_host(inv, "nas", SshTarget("nas.lan"))
    inv = edits.add_host(inv, "vps1", SshTarget("203.0.113.1"))
    inventory.create(tmp_path / "vpc.toml", inv)

    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "VPCCTL_INVENTORY": str(tmp_path / "vpc.toml"), "_VPCCTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(cword), "PYTHONPATH": str(ROOT)}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", "from vpcctl.cli.commands import app; app(prog_name='vpcctl')"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return done.stdout.split()

    assert "host" in complete("vpcctl ho", 1)
    assert complete("vpcctl host rm ", 3) == ["nas", "vps1"]
    assert complete("vpcctl host rm v", 3) == ["vps1"]
