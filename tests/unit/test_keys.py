"""Keys agree with wireguard-tools byte for byte; key files are born private; keys never print."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpcctl.core import keys
from vpcctl.core.errors import KeyFileError
from vpcctl.core.keys import PrivateKey, clamp, ensure_private, load_private, write_secret
from vpcctl.core.model import parse_public_key

BATCH = 48


def _wg_pubkeys(privates: list[str]) -> list[str]:
    """``wg pubkey`` for each private key, in one shell (one subprocess for the whole batch)."""
    script = 'while IFS= read -r k; do printf "%s\\n" "$k" | wg pubkey; done'
    done = subprocess.run(
        ["bash", "-c", script],
        input="".join(k + "\n" for k in privates),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.splitlines()


def _clamped(raw: bytes) -> bool:
    return raw[0] & 0b111 == 0 and raw[31] & 0x80 == 0 and raw[31] & 0x40 == 0x40


def test_public_key_equals_wg_pubkey_for_our_keys() -> None:
    privates = [PrivateKey.generate() for _ in range(BATCH)]
    expected = _wg_pubkeys([k.to_base64() for k in privates])
    assert len(expected) == BATCH
    assert [k.public_key() for k in privates] == expected
    for pub in expected:
        assert parse_public_key(pub, "wg pubkey") == pub


def test_public_key_equals_wg_pubkey_for_wg_genkey_keys() -> None:
    done = subprocess.run(
        ["bash", "-c", f"for i in $(seq {BATCH}); do wg genkey; done"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    privates = done.stdout.splitlines()
    assert len(privates) == BATCH
    expected = _wg_pubkeys(privates)
    assert [keys.public_from_private(k) for k in privates] == expected
    # our clamp check is the same as wg genkey's: every key it made passes it, unchanged by clamp
    for k in privates:
        raw = PrivateKey.from_base64(k).raw
        assert _clamped(raw) and clamp(raw) == raw


def test_generated_keys_are_clamped_like_wg_genkey() -> None:
    generated = [PrivateKey.generate().raw for _ in range(200)]
    assert all(_clamped(raw) for raw in generated)
    assert len(set(generated)) == len(generated)


def test_clamp_bits() -> None:
    high = clamp(b"\xff" * 32)
    assert high[0] == 0b11111000 and high[31] == 0b01111111 and high[1:31] == b"\xff" * 30
    low = clamp(b"\x00" * 32)
    assert low[0] == 0 and low[31] == 0b01000000 and low[1:31] == b"\x00" * 30


def test_wg_accepts_an_unclamped_key_the_same_way() -> None:
    # wg clamps on use: a raw scalar and its clamped form have the same public key
    raw = bytes(range(32))
    unclamped, clamped = PrivateKey(raw), PrivateKey(clamp(raw))
    assert unclamped.public_key() == clamped.public_key() == _wg_pubkeys([unclamped.to_base64()])[0]


def test_repr_and_str_never_show_the_key() -> None:
    key = PrivateKey.generate()
    secret = key.to_base64()
    shown = [repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"k": key})]
    for text in shown:
        assert secret not in text
        assert secret[:16] not in text
        assert "redacted" in text


def test_bad_private_keys_are_refused() -> None:
    with pytest.raises(KeyFileError):
        PrivateKey(b"short")
    with pytest.raises(KeyFileError, match="not valid base64"):
        PrivateKey.from_base64("not base64!")
    with pytest.raises(KeyFileError, match="not 32 bytes"):
        PrivateKey.from_base64("AAAA")


# ---------------------------------------------------------------------------------------------
# key files


@pytest.fixture
def no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_write_secret_is_0600_even_with_umask_0(tmp_path: Path, no_umask: None) -> None:
    path = tmp_path / "state" / "private.key"
    write_secret(path, b"secret\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes() == b"secret\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["private.key"]


def test_write_secret_file_is_private_before_the_first_byte(
    tmp_path: Path, no_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        st = os.fstat(fd)
        seen.append((stat.S_IMODE(st.st_mode), st.st_size))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    write_secret(tmp_path / "private.key", b"secret\n")
    assert seen == [(0o600, 0)]


def test_write_secret_never_follows_a_planted_temp_file(tmp_path: Path) -> None:
    # the temp file is created with O_CREAT | O_EXCL | O_NOFOLLOW: a symlink planted at its name
    # makes the write fail instead of writing the key through it
    path = tmp_path / "private.key"
    target = tmp_path / "stolen"
    (tmp_path / f".private.key.{os.getpid()}.tmp").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_secret(path, b"secret\n")
    assert not target.exists() and not path.exists()


def test_write_secret_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    write_secret(path, b"one\n")
    write_secret(path, b"two\n")
    assert path.read_bytes() == b"two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_private_refuses_a_readable_key_with_a_chmod_hint(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    key = PrivateKey.generate()
    write_secret(path, (key.to_base64() + "\n").encode())
    assert load_private(path) == key
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        load_private(path)
    assert "readable by others (mode 644)" in info.value.message
    assert info.value.hint == f"chmod 600 {path}"
    assert key.to_base64() not in info.value.message
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="mode 640"):
        load_private(path)


def test_load_private_missing_and_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private(tmp_path / "missing.key")
    assert "keygen" in (info.value.hint or "")
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "missing.key")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_private(link)


def test_ensure_private_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "private.key"
    first, created = ensure_private(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_private(path)
    assert not created_again and again == first
    assert path.read_text() == first.to_base64() + "\n"
