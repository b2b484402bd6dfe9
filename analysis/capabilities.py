"""What each agent of a summary declares it does, read from the capability columns ``nsr sweep`` records.

The report names no agent to find its roles: the reference of Theorem 1, the memoryless
heuristics and the learned controllers are whichever agents declare ``reads_hidden``,
``memoryless`` or ``needs_training``, so a new agent takes its place in every table and
figure without a change here. The order of agents in tables and figures, and their
colours, follow from the same columns.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib import colormaps

from analysis.results import CAPABILITY_COLUMNS, checked

__all__ = ["agent_order", "agents_with", "capabilities", "colours", "reference_agent"]


def capabilities(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per agent (the index), one boolean column per capability: True where any of its rows declares it."""
    frame = checked(summary, ["agent", *CAPABILITY_COLUMNS], "summary")
    return frame.groupby("agent")[list(CAPABILITY_COLUMNS)].any()


def agent_order(summary: pd.DataFrame) -> list[str]:
    """The agents of ``summary`` in the order of tables and figures, alphabetical within each group.

    Groups: the reference (``reads_hidden``), then the rules that use memory, then the
    memoryless rules (``memoryless``), then the learned controllers (``needs_training``). An
    agent that declares several goes to the reference first, then to the learned controllers.
    """
    table = capabilities(summary)
    groups = np.select([table["reads_hidden"], table["needs_training"], table["memoryless"]], [0, 3, 2], default=1)
    group = dict(zip(table.index, groups, strict=True))
    return sorted(table.index, key=lambda agent: (group[agent], agent))


def agents_with(summary: pd.DataFrame, capability: str) -> list[str]:
    """The agents of ``summary`` that declare ``capability``, in :func:`agent_order`."""
    table = capabilities(summary)
    return [agent for agent in agent_order(summary) if table.loc[agent, capability]]


def reference_agent(summary: pd.DataFrame) -> str | None:
    """The reference of Theorem 1: the agent that reads the hidden task labels, or None if none does.

    Several such agents are not an error: the first alphabetically is the reference and the
    others are compared with it like any agent.
    """
    return next(iter(agents_with(summary, "reads_hidden")), None)


def colours(agents: Iterable[str]) -> dict[str, tuple]:
    """A colour per agent by its place in ``agents`` (tab10, cycling): one order, the same colours in every figure."""
    palette = colormaps["tab10"]
    return {agent: palette(index % 10) for index, agent in enumerate(agents)}
