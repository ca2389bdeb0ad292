"""WireGuard keys with PyNaCl (X25519), in WireGuard's base64 format.

A host's private key is born on that host (``vpcctl agent keygen``) in a file created with mode
0600 before its first byte is written, and never leaves it. ``repr`` and ``str`` of a
:class:`PrivateKey` never show the key.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vpcctl.core.errors import KeyFileError


def clamp(raw: bytes) -> bytes:
    """Clamp a Curve25519 scalar exactly as ``wg genkey`` does."""
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise KeyFileError("a WireGuard private key is 32 bytes", "generate one with keygen")

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(clamp(os.urandom(32)))

    @classmethod
    def from_base64(cls, text: str) -> PrivateKey:
        from vpcctl.core.model import key_bytes

        try:
            return cls(key_bytes(text))
        except ValueError as exc:
            raise KeyFileError(f"private key is {exc}", "regenerate it") from None

    def to_base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def public_key(self) -> str:
        from nacl.bindings import crypto_scalarmult_base

        return base64.b64encode(crypto_scalarmult_base(self.raw)).decode("ascii")

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"

    __str__ = __repr__


def public_from_private(private_b64: str) -> str:
    return PrivateKey.from_base64(private_b64).public_key()


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 *before* any byte is written, atomically (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # in case of an unusual umask; still before any byte
        view = memoryview(data)
        while view:  # a write to a nearly full disk can be short before it fails
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def load_private(path: Path) -> PrivateKey:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no private key", "run `vpcctl agent keygen` on this host first"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file", "remove it and run `vpcctl agent keygen`")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: private key is readable by others (mode {st.st_mode & 0o777:o})",
            f"chmod 600 {path}",
        )
    return PrivateKey.from_base64(path.read_text(encoding="ascii"))


def ensure_private(path: Path) -> tuple[PrivateKey, bool]:
    """The key at ``path``, created if missing. Returns (key, created)."""
    if path.exists():
        return load_private(path), False
    key = PrivateKey.generate()
    write_secret(path, (key.to_base64() + "\n").encode("ascii"))
    return key, True
