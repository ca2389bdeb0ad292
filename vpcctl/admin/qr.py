"""QR codes of a roaming client's wg-quick config (the one user of ``segno``).

The text of the code holds the client's private key: it is drawn on the terminal once and, when
asked, written as a PNG created with mode 0600 before any byte is written (core/keys.py)."""

from __future__ import annotations

import io
from pathlib import Path

import segno

from vpcctl.core.keys import write_secret

PNG_SCALE = 6  # pixels per module: about 300 px for a config, what a phone camera reads easily


def _code(text: str) -> segno.QRCode:
    # a full QR code (never Micro QR, which the WireGuard apps cannot read), low error correction
    # (the densest code a config fits in; it is read from a screen, not from worn paper)
    return segno.make_qr(text, error="l")


def terminal(text: str) -> str:
    """The code drawn with Unicode half blocks (two rows per line), with its quiet zone."""
    out = io.StringIO()
    _code(text).terminal(out=out, compact=True)
    return out.getvalue()


def png(text: str) -> bytes:
    out = io.BytesIO()
    _code(text).save(out, kind="png", scale=PNG_SCALE)
    return out.getvalue()


def write_png(path: Path, text: str) -> None:
    """Write the code as a PNG at ``path``, mode 0600 from birth (temp file + rename)."""
    write_secret(path, png(text))
