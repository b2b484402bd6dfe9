"""Memory mechanisms: where a task's adapter and head go when it leaves its slot (scenario field ``memory``).

Each member is one file with a :class:`nsr_env.memories.base.Memory` subclass, listed here
by one ``register_memory`` line (an import path, so the registry itself imports no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsr_env.memories.retention import RETENTION_POLICIES
from nsr_env.registry import Registry

if TYPE_CHECKING:
    from nsr_env.config import LearnerConfig
    from nsr_env.memories.base import Memory

MEMORIES = Registry("memory")


def register_memory(name: str, entry: type[Memory] | str) -> None:
    """Make a memory mechanism available as scenario field ``memory=name`` (a duplicate name raises)."""
    MEMORIES.register(name, entry)


def make_memory(config: LearnerConfig, key_dim: int) -> Memory:
    """The memory named by ``config.memory``, built for keys of ``key_dim`` entries."""
    return MEMORIES.get(config.memory).from_config(config, key_dim)


register_memory("svd", "nsr_env.memories.svd:TaskKnowledgeBank")
register_memory("share", "nsr_env.memories.share:SharedSubspaceMemory")
register_memory("moram", "nsr_env.memories.moram:RankOneAtomMemory")

__all__ = ["MEMORIES", "RETENTION_POLICIES", "make_memory", "register_memory"]
