"""A strict name registry: one name, one implementation, resolved when first used.

Entries are objects or ``"module:attribute"`` strings (Gymnasium's entry points), so a
registry of torch-backed implementations can be listed and validated without importing
torch: a scenario, a sweep config and ``nsr report`` check names against it for free.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class Registry:
    """Names of one kind (``memory``, ``protect``, ...) mapped to their implementations."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any) -> Any:
        """Add ``name``; a second registration of the same name raises instead of replacing the first."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.field} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.field} {name!r} is already registered; choose another name")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register a temporary member)."""
        self.check(name)
        del self._entries[name]

    def check(self, name: object) -> str:
        """``name`` if it is registered, else one ValueError naming the field and the choices."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{self.field}={name!r} is unknown; choose one of {sorted(self._entries)}")
        return name

    def get(self, name: str) -> Any:
        """The implementation registered as ``name`` (a ``"module:attribute"`` entry is imported now)."""
        entry = self._entries[self.check(name)]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.field!r}, {sorted(self._entries)})"
