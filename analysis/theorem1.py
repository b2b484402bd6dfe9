"""Theorem 1 measured: cumulative regret in excess of a reference agent's against returning visits.

Theorem 1: with capacity below the number of tasks, a memoryless policy relearns at every
return, so its excess regret grows linearly with the returning visits ((T-1)M with one
slot), slope about Delta_switch; a bank-backed policy's stays flat. The reference is the
agent that reads the hidden task labels (:func:`analysis.capabilities.reference_agent`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.capabilities import agent_order, agents_with, reference_agent
from analysis.results import (
    CAPABILITY_COLUMNS,
    STRATUM_COLUMNS,
    checked,
    overrides_text,
    runs_of,
    stratum_columns,
    with_strata,
)

__all__ = ["excess_regret", "theorem1_fit"]


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = slope x + intercept`` and its R².

    Slope and intercept are NaN with fewer than two distinct x; R² is NaN when y does not
    vary (there is no variance to explain).
    """
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean()) / (dx @ dx))
    intercept = float(y.mean() - slope * x.mean())
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - slope * x - intercept) ** 2).sum())
    return slope, intercept, (1 - residual / total) if total > 0 else math.nan


def theorem1_frame(summary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The summary's rows in the theorem's setting, labelled with their strata, and the reference agent there.

    The setting is one slot: when the summary has one-slot strata, the others (e.g. a 2-slot
    ablation) stay out. Raises ``ValueError`` when no agent there reads the hidden task labels.
    """
    required = ["agent", "seed", *STRATUM_COLUMNS, *CAPABILITY_COLUMNS, "returning_visits", "cumulative_regret",
                "first_visit_regret"]  # fmt: skip
    frame = with_strata(checked(summary, required, "summary"))
    if (frame["slots"] == 1).any():
        frame = frame[frame["slots"] == 1]
    reference = reference_agent(frame)
    if reference is None:
        agents = ", ".join(agent_order(frame))
        raise ValueError(
            "the Theorem 1 fit measures regret in excess of that of an agent that reads the hidden task labels "
            f"(reads_hidden), but the summary has no runs of one (agents: {agents}); add one (oracle) to the sweep "
            "config's agents and run `nsr sweep` again"
        )
    return frame, reference


def _theorem1_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``frame`` with their ``setting``: the overrides other than M and T that vary ("heads=slot")."""
    runs = runs_of(frame, ["returning_visits", "cumulative_regret", "first_visit_regret"])
    varied = [c for c in stratum_columns(frame) if c not in ("tasks_per_cycle", "cycles")]  # what a line keeps fixed
    setting = overrides_text(frame, varied).str.strip()
    runs["setting"] = runs["stratum"].map(dict(zip(frame["stratum"], setting, strict=True)))
    return runs


def _excess(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The rows of :func:`excess_regret` from the runs of :func:`_theorem1_runs`."""
    base = runs.loc[runs["agent"] == reference, ["stratum", "seed", "cumulative_regret"]]
    points = runs[runs["agent"] != reference].merge(base, on=["stratum", "seed"], suffixes=("", "_reference"))
    points["excess_regret"] = points["cumulative_regret"] - points["cumulative_regret_reference"]
    points["series"] = (points["agent"] + " " + points["setting"]).str.strip()
    columns = ["series", "agent", "stratum", *STRATUM_COLUMNS, "seed", "returning_visits", "excess_regret"]
    return points[columns]


def excess_regret(summary: pd.DataFrame) -> pd.DataFrame:
    """Cumulative regret in excess of the reference's, per run with a reference run of the same stratum and seed.

    The reference is the agent that reads the hidden task labels (the oracle); if several
    do, the first alphabetically, the others being compared with it like any agent. Only
    one-slot strata count when the summary has any (the theorem's setting). One row per
    (agent, stratum, seed), the reference excluded: ``returning_visits`` and
    ``excess_regret`` = the run's cumulative regret minus the reference's (both averaged over
    episodes), and ``series``: the agent, plus the setting when the strata differ in more
    than M and T ("keep heads=slot"). Each series gets its own line. Raises ``ValueError``
    when the summary has no reference runs.
    """
    frame, reference = theorem1_frame(summary)
    return _excess(_theorem1_runs(frame), reference)


def _delta_switch(runs: pd.DataFrame, agents: list[str]) -> tuple[float, str]:
    """Measured Delta_switch: the mean first-visit regret of the first of ``agents`` that has one, and whose it is."""
    for agent in agents:
        value = runs.loc[runs["agent"] == agent, "first_visit_regret"].mean()
        if pd.notna(value):
            return float(value), f"{agent} first_visit_regret"
    return math.nan, "unavailable"


def theorem1_fit(summary: pd.DataFrame) -> pd.DataFrame:
    """Per series, the least-squares line of excess regret over the reference against returning visits.

    One row per series (an agent in one setting, see :func:`excess_regret`; the reference
    excluded): ``series``, ``agent``, ``slope``, ``intercept``, ``r2``, ``n_points`` (runs),
    ``delta_switch`` (the same measured value on every row) and ``delta_switch_source``
    (whose ``first_visit_regret`` it is). Delta_switch is the regret of learning a task from
    scratch: the reference's mean first-visit regret, or, where that is NaN, that of the first
    memoryless agent in :func:`analysis.capabilities.agent_order` (alphabetical: fresh, which
    starts every phase from scratch, when it ran). Raises ``ValueError`` when the summary has
    no reference runs.
    """
    frame, reference = theorem1_frame(summary)
    runs = _theorem1_runs(frame)
    points = _excess(runs, reference)
    memoryless = agents_with(frame, "memoryless")
    relearner = ["fresh"] if "fresh" in memoryless else memoryless[:1]  # fresh relearns from scratch by definition
    delta, source = _delta_switch(runs, [reference, *relearner])
    rows = []
    order = {agent: i for i, agent in enumerate(agent_order(frame))}
    series = points.drop_duplicates("series").sort_values("series", key=lambda s: s.str.len(), kind="stable")
    series = series.sort_values("agent", key=lambda agents: agents.map(order), kind="stable")
    for name, agent in zip(series["series"], series["agent"], strict=True):
        group = points[points["series"] == name]
        x = group["returning_visits"].to_numpy(float)
        y = group["excess_regret"].to_numpy(float)
        keep = np.isfinite(x) & np.isfinite(y)
        slope, intercept, r2 = _line_fit(x[keep], y[keep])
        rows.append(
            {"series": name, "agent": agent, "slope": slope, "intercept": intercept, "r2": r2,
             "n_points": int(keep.sum()), "delta_switch": delta, "delta_switch_source": source}
        )  # fmt: skip
    columns = ["series", "agent", "slope", "intercept", "r2", "n_points", "delta_switch", "delta_switch_source"]
    return pd.DataFrame(rows, columns=columns)
