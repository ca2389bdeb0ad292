"""Confirmed apply (`vpcctl up --confirm SECONDS`), the values both sides share: the window's
bounds, the token, the pending record a host keeps, and the per-host outcome the admin reports.

Pure: no disk, clock or network (times are passed in as epoch seconds)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from vpcctl.core.errors import UsageError

MIN_SECONDS = 10.0  # below this an admin can hardly apply and reconnect in time
MAX_SECONDS = 3600.0
AGENT_MIN_SECONDS = 1.0  # what a host accepts (the admin side enforces MIN_SECONDS)
#: test-only: lowers the admin side's MIN_SECONDS (never below AGENT_MIN_SECONDS)
MIN_ENV = "VPCCTL_TEST_CONFIRM_MIN"

_TOKEN = re.compile(r"^[0-9a-f]{8,64}$")


def parse_seconds(raw: object, option: str, low: float = MIN_SECONDS) -> float:
    """A confirm window: a finite number of seconds from ``low`` to MAX_SECONDS."""
    try:
        value = float(str(raw))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= MAX_SECONDS):
        raise UsageError(
            f"{option}: {raw!r} is not a number of seconds from {low:g} to {MAX_SECONDS:g}",
            "give the hosts time to apply and you to reconnect, e.g. --confirm 60",
        )
    return value


def min_seconds(env: dict[str, str] | Any) -> float:
    """The admin side's lower bound: MIN_SECONDS, or the test override in ``env``."""
    raw = env.get(MIN_ENV)
    if raw is None:
        return MIN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and AGENT_MIN_SECONDS <= value <= MIN_SECONDS):
        raise UsageError(
            f"${MIN_ENV}: {raw!r} is not a number of seconds from {AGENT_MIN_SECONDS:g} to "
            f"{MIN_SECONDS:g}",
            f"unset it (it is for tests only), or set e.g. {MIN_ENV}=2",
        )
    return value


def parse_token(raw: str, option: str = "--token") -> str:
    if not _TOKEN.match(raw):
        raise UsageError(
            f"{option}: {raw[:80]!r} is not a token", "use 8 to 64 lower-case hex digits"
        )
    return raw


@dataclass(frozen=True)
class Pending:
    """A confirmed apply waiting for its confirmation, as a host keeps it (``confirm.json``).

    ``previous``: the HostSpec text applied before (what the revert converges back to; None:
    nothing was applied, the revert removes everything vpcctl owns); ``saved``/``saved_path``:
    the content of the spec file ``apply --save`` replaced (restored on revert)."""

    token: str
    seconds: float
    deadline: float  # epoch seconds (the host's clock)
    previous: str | None
    saved: str | None = None
    saved_path: str | None = None

    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Pending | None:
        """The record, or None when it is not one (a torn or foreign file)."""
        try:
            data = json.loads(text)
            p = cls(
                token=str(data["token"]),
                seconds=float(data["seconds"]),
                deadline=float(data["deadline"]),
                previous=_opt_str(data.get("previous")),
                saved=_opt_str(data.get("saved")),
                saved_path=_opt_str(data.get("saved_path")),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        return p if _TOKEN.match(p.token) and math.isfinite(p.deadline) else None

    def describe(self, now: float) -> dict[str, Any]:
        """What `agent status` and `agent confirm` show of it."""
        return {
            "pending": True,
            "token": self.token,
            "seconds": self.seconds,
            "deadline": round(self.deadline, 3),
            "seconds_left": round(max(0.0, self.deadline - now), 1),
            "reverts_to": "the previous spec"
            if self.previous is not None
            else "nothing (first apply: the revert removes everything vpcctl made)",
        }


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


# the admin side's outcome per host ----------------------------------------------------------

CONFIRMED = "confirmed"
UNCONFIRMED = "not confirmed"
UNCHANGED = "unchanged"
FAILED = "failed"


def outcome(
    applied: bool, armed: bool | None, confirmed: bool, reverted: bool, revert_at: str | None
) -> str:
    """The CONFIRM column: ``applied`` the apply answered ok; ``armed`` it armed a revert (None:
    its answer never came, so perhaps); ``confirmed`` `agent confirm` succeeded; ``reverted``
    the host said it already reverted; ``revert_at`` HH:MM:SS."""
    if confirmed:
        return CONFIRMED
    if applied and armed is False:
        return UNCHANGED
    if not applied and armed is not None:
        return FAILED
    when = f"reverted at {revert_at}" if reverted else f"will revert at {revert_at}"
    return f"{UNCONFIRMED} ({when})" if revert_at else UNCONFIRMED
