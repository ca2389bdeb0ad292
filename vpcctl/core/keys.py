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
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # os.write names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
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


# ------------------------------------------------------------------------- preshared keys


@dataclass(frozen=True, slots=True)
class PresharedKey:
    """A WireGuard preshared key (32 random bytes; all zero means "none"). Never shown."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise KeyFileError("a WireGuard preshared key is 32 bytes", "re-run `vpcctl up`")

    @classmethod
    def generate(cls) -> PresharedKey:
        return cls(os.urandom(32))

    @classmethod
    def none(cls) -> PresharedKey:
        return cls(bytes(32))

    def to_base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def digest(self) -> str | None:
        """A short one-way digest (compares keys without showing them); None for "none"."""
        return psk_digest(self.raw)

    def __repr__(self) -> str:
        return "PresharedKey(<redacted>)"

    __str__ = __repr__


def psk_digest(raw: bytes) -> str | None:
    import hashlib

    if not any(raw):
        return None
    return hashlib.blake2b(raw, digest_size=16, person=b"vpcctl-psk").hexdigest()


def seal(psk: PresharedKey, public_b64: str) -> str:
    """The key sealed to a host's WireGuard public key (X25519 sealed box): only that host's
    private key opens it, so whoever carries it (the admin's process) learns nothing."""
    from nacl.public import PublicKey, SealedBox

    from vpcctl.core.model import key_bytes

    box = SealedBox(PublicKey(key_bytes(public_b64))).encrypt(psk.raw)
    return base64.b64encode(box).decode("ascii")


def unseal(sealed_b64: str, key: PrivateKey) -> PresharedKey:
    from nacl.exceptions import CryptoError
    from nacl.public import PrivateKey as NaclPrivate
    from nacl.public import SealedBox

    try:
        box = base64.b64decode(sealed_b64, validate=True)
        return PresharedKey(SealedBox(NaclPrivate(key.raw)).decrypt(box))
    except (ValueError, CryptoError, KeyFileError):
        raise KeyFileError(
            "a preshared key sealed to this host does not open with its key",
            "re-run `vpcctl up` (the pair's key is sent again)",
        ) from None


def load_psks(path: Path) -> dict[str, PresharedKey]:
    """The host's preshared keys by pair (``core.pairs.pair_id``); {} when there are none."""
    import json

    try:
        st = path.lstat()
    except FileNotFoundError:
        return {}
    hint = f"remove {path} and run `vpcctl rotate-psk` (new keys for every pair of this host)"
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        raise KeyFileError(f"{path}: not a regular file of mode 0600", hint)
    try:
        data = json.loads(path.read_text(encoding="ascii"))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        from vpcctl.core.model import key_bytes

        return {str(k): PresharedKey(key_bytes(v)) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError, KeyFileError):
        raise KeyFileError(f"{path}: not a preshared-key file", hint) from None


def save_psks(path: Path, psks: dict[str, PresharedKey]) -> None:
    import json

    text = json.dumps({k: v.to_base64() for k, v in sorted(psks.items())}, indent=1)
    write_secret(path, (text + "\n").encode("ascii"))
