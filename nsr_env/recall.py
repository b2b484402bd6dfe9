"""The recall part of an action: how the slot of a new phase is set up.

One definition, read by the environment, the controllers, the sweep and the report.
Pure Python: ``nsr report`` reads recall codes from tables without importing torch.
"""

from __future__ import annotations

from enum import IntEnum


class Recall(IntEnum):
    """Recall code ``0`` = fresh, ``1`` = keep, ``2 + i`` = recall memory position ``i``."""

    FRESH = 0  # the slot starts from scratch (B = 0)
    KEEP = 1  # the slot continues as it is, shared with its earlier users
    BANK = 2  # the first recall code: 2 + i recalls position i

    @staticmethod
    def of_position(position: int) -> int:
        """The recall code that recalls memory position ``position``."""
        return Recall.BANK + int(position)

    @staticmethod
    def position(code: int) -> int | None:
        """The memory position a recall code recalls, or None for fresh and keep."""
        return int(code) - Recall.BANK if code >= Recall.BANK else None

    @staticmethod
    def kind(code: int) -> str:
        """``"fresh"``, ``"keep"`` or ``"recall"``: what a code does, for tables and figures."""
        return "recall" if code >= Recall.BANK else "keep" if code == Recall.KEEP else "fresh"
