"""``none``: no protection; a shared slot is fine-tuned naively (the forgetting baseline)."""

from __future__ import annotations

from nsr_env.protection.base import PhaseStart, Protection


class NoProtection(Protection):
    name = "none"

    def begin_phase(self, start: PhaseStart) -> None:
        """Nothing to keep."""
