"""Controllers for the NSR environments: ``agents.make(name, env, **kwargs)`` and ``agents.evaluate``.

One file per family; a new controller is one class with ``@register_agent`` in a new
file plus one import line here.
"""

from agents import memoryless, oracle, ppo, probe, similarity  # noqa: F401  (registration on import)
from agents.base import AGENTS, Agent, register_agent
from agents.evaluate import COLUMNS, evaluate, make

__all__ = ["AGENTS", "COLUMNS", "Agent", "evaluate", "make", "register_agent"]
