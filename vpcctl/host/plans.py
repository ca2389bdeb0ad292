"""The base of every typed change and the Plan (a tuple of changes): pure values.

Two classes only, and light to import: the agent's no-change fast path answers with an empty Plan
without loading the change types (changes.py), the planner or the kernel adapters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, ClassVar

MANAGED = "--managed"  # on the command line of an agent daemon that `agent apply` started


@dataclass(frozen=True)
class Change:
    """One step of a plan. A subclass gives its line as a template over its fields, e.g.
    `class AddRoute(Change, text="add route {route}")`, or overrides describe(). Its JSON is
    every field but those left out of the repr (bulky or internal ones), plus op and text."""

    TEXT: ClassVar[str] = ""

    def __init_subclass__(cls, text: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if text:
            cls.TEXT = text

    def describe(self) -> str:
        if not self.TEXT:
            raise NotImplementedError
        return self.TEXT.format_map({f.name: getattr(self, f.name) for f in fields(self)})

    def to_json(self) -> dict[str, Any]:
        hidden = {f.name for f in fields(self) if not f.repr}
        data = {k: _jsonable(v) for k, v in asdict(self).items() if k not in hidden}
        return {"op": type(self).__name__, **data, "text": self.describe()}


def _jsonable(value: object) -> object:
    if isinstance(value, IPv4Address | IPv4Network | IPv4Interface):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def describe(self) -> list[str]:
        return [c.describe() for c in self.changes]

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.changes]
