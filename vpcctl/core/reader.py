"""One reader of raw parsed data (a TOML document, a JSON object) into checked Python values,
naming ``SOURCE: KEY`` in every error. Pure.

The inventory reads `vpc.toml` with it (errors are :class:`ValidationError`, worded for TOML);
the agent reads a HostSpec with it (errors are :class:`SpecError` with the hint to render the
spec again). Values themselves (addresses, names, keys) are parsed by ``core/model.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Interface
from typing import Any, Literal, TypeVar

from vpcctl.core.errors import ValidationError, VpcctlError

T = TypeVar("T")
Names = tuple[str, ...]  # the keys a table must have, or may have


class Reader:
    def __init__(
        self,
        source: str,
        *,
        error: type[VpcctlError] = ValidationError,
        hint: str | None = None,
        fmt: Literal["toml", "json"] = "toml",
    ) -> None:
        self.source = source
        self.error = error
        self.hint = hint
        self.fmt = fmt

    def where(self, key: str) -> str:
        return f"{self.source}: {key}"

    def fail(self, key: str, problem: str, hint: str | None = None) -> VpcctlError:
        return self.error(f"{self.where(key)}: {problem}", hint if hint is not None else self.hint)

    def mapping(self, value: object, key: str) -> dict[str, Any]:
        """A TOML table or a JSON object."""
        if not isinstance(value, dict):
            if self.fmt == "json":
                raise self.fail(key, "expected an object")
            raise self.fail(
                key,
                f"expected a table, got {type(value).__name__}",
                f"write it as [{key}] with key = value lines",
            )
        return value

    def lst(self, value: object, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, "expected a list")
        return value

    def get(self, m: Mapping[str, Any], name: str, key: str) -> Any:
        if name not in m:
            raise self.fail(key, f"missing {name!r}")
        return m[name]

    def keys(self, table: Mapping[str, Any], key: str, required: Names, optional: Names) -> None:
        """Only known keys, and every required one."""
        for name in table:
            if name not in required and name not in optional:
                path = f"{key}.{toml_key(name)}" if key else toml_key(name)
                raise self.fail(
                    path, "unknown key", f"allowed keys here: {', '.join(required + optional)}"
                )
        for name in required:
            if name not in table:
                raise self.fail(key, f"missing key {name!r}", f"add {name} = ... to [{key}]")

    def tables(
        self, raw: Mapping[str, Any], section: str, required: Names, optional: Names
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Each ``[SECTION.NAME]`` table, its keys checked: (NAME, its key, the table)."""
        for name, value in self.mapping(raw.get(section, {}), section).items():
            key = f"{section}.{toml_key(name)}"
            table = self.mapping(value, key)
            self.keys(table, key, required, optional)
            yield name, key, table

    def records(self, m: Mapping[str, Any], name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each object of the list ``m[name]``: (its key ``NAME[i]``, the object)."""
        for i, item in enumerate(self.lst(self.get(m, name, name), name)):
            key = f"{name}[{i}]"
            yield key, self.mapping(item, key)

    def field(
        self, record: Mapping[str, Any], name: str, key: str, parse: Callable[..., T], *args: Any
    ) -> T:
        """``record[name]`` (required; ``record`` is at ``key``) read by a core/model.py parser:
        ``parse(value, where, *args)``."""
        return parse(self.get(record, name, key), self.where(f"{key}.{name}"), *args)

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(
                key, f"expected a string, got {type(value).__name__}", 'quote it: key = "value"'
            )
        if any(ch in value for ch in "\n\r\0") or not value.isprintable():
            raise self.fail(key, "contains control characters", "remove them")
        return value

    def iface(self, value: object, key: str) -> IPv4Interface:
        """``ADDRESS/PREFIX``."""
        from vpcctl.core.model import parse_address

        if not isinstance(value, str) or "/" not in value:
            raise self.fail(key, "expected ADDRESS/PREFIX")
        addr, _, prefix = value.partition("/")
        parse_address(addr, self.where(key))
        if not (prefix.isascii() and prefix.isdigit()) or not 0 <= int(prefix) <= 32:
            raise self.fail(key, "bad prefix length")
        return IPv4Interface(value)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """``name`` as a TOML key: bare when it can be, else quoted with every control character
    escaped, so that an error naming a hostile key stays on one line."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)
