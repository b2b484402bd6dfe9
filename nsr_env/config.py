"""What the learner does per decision step and the memory it has: :class:`LearnerConfig`.

Pure configuration (no torch), so scenarios can be built and checked anywhere. Names of
memory mechanisms, protection rules and retention policies are checked against their
registries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from nsr_env.memories import MEMORIES, RETENTION_POLICIES
from nsr_env.protection import PROTECTIONS

HEADS = ("task", "slot")
KEYS = ("input", "pooled", "arrow")
"""How a task is recognised: the mean adapted-layer input of its images; their mean frozen pooled
feature above the layer; or ``"arrow"``, no data key at all: a memory entry is scored by how much
of the probe's inputs its own top right-singular vectors capture (:func:`nsr_env.lowrank.arrow_score`)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LearnerConfig:
    """The learner's knobs; every field is also a scenario field of the same name."""

    slots: int = 2
    rank: int = 4
    lora_alpha: float | None = None  # None: alpha = rank (scale 1)
    optimizer_steps: int = 1
    batch_size: int = 16
    lr: float = 5e-4
    memory: str = "svd"  # a name in nsr_env.memories.MEMORIES
    protect: str = "distill"  # a name in nsr_env.protection.PROTECTIONS
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    eblora_energy: float = 0.99  # protect="eblora": energy of a task's gradient that its protected subspace holds
    bank_capacity: int = 8
    svd_energy: float | None = 0.99  # keep this fraction of the squared singular values ...
    svd_rank: int | None = None  # ... or a fixed rank (then svd_energy must be None)
    bank_float16: bool = False
    retention: str = "lru"
    share_basis: int = 32  # memory="share": directions of each shared basis (input side, output side)
    moram_topk: int | None = None  # memory="moram": atoms active per input (at least 2); None: the LoRA rank
    moram_temperature: float = 0.01  # memory="moram": softmax temperature over the top-k scores
    moram_threshold: float = 0.2  # memory="moram": at evaluation, gates scored below this are dropped
    eval_size: int | None = 200  # held-out samples evaluated per step; None: all
    heads: str = "task"  # "task": a head per task; "slot": a slot's tasks share its head

    def __post_init__(self) -> None:
        for name in ("slots", "rank", "optimizer_steps", "batch_size", "bank_capacity", "share_basis"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.eval_size is not None and (not _is_int(self.eval_size) or self.eval_size < 1):
            raise ValueError(f"eval_size={self.eval_size!r} must be an integer >= 1, or None (all held-out samples)")
        for name in ("lr", "distill_temperature"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive finite number")
        if self.lora_alpha is not None and not 0 < self.lora_alpha < math.inf:
            raise ValueError(f"lora_alpha={self.lora_alpha} must be a positive finite number, or None (= rank)")
        if self.moram_topk is not None and (not _is_int(self.moram_topk) or self.moram_topk < 1):
            raise ValueError(f"moram_topk={self.moram_topk!r} must be an integer >= 1, or None (the LoRA rank)")
        if not 0 < self.moram_temperature < math.inf:
            raise ValueError(f"moram_temperature={self.moram_temperature} must be a positive finite number")
        if not -1 <= self.moram_threshold < 1:
            raise ValueError(f"moram_threshold={self.moram_threshold} must be in [-1, 1)")
        if not 0 < self.eblora_energy <= 1:
            raise ValueError(f"eblora_energy={self.eblora_energy} must be in (0, 1]")
        if not 0 <= self.distill_weight < math.inf:
            raise ValueError(f"distill_weight={self.distill_weight} must be >= 0 and finite")
        if (self.svd_energy is None) == (self.svd_rank is None):
            raise ValueError(
                f"svd_energy={self.svd_energy!r}, svd_rank={self.svd_rank!r}: give exactly one, an energy fraction "
                "or a fixed rank (set svd_energy=None to use svd_rank)"
            )
        if self.svd_energy is not None and not 0 < self.svd_energy <= 1:
            raise ValueError(f"svd_energy={self.svd_energy} must be in (0, 1]")
        if self.svd_rank is not None and (not _is_int(self.svd_rank) or self.svd_rank < 0):
            raise ValueError(f"svd_rank={self.svd_rank!r} must be an integer >= 0")
        if self.heads not in HEADS:
            raise ValueError(f"heads={self.heads!r} is unknown; choose 'task' (one head per task) or 'slot' (shared)")
        if self.retention not in RETENTION_POLICIES:
            raise ValueError(f"retention={self.retention!r} is unknown; choose one of {sorted(RETENTION_POLICIES)}")
        MEMORIES.check(self.memory)
        PROTECTIONS.check(self.protect)


LEARNER_FIELDS = tuple(field.name for field in fields(LearnerConfig))
