"""The rows of ``summary.csv``: one per (cell, episode), computed from that episode's steps.

Every measure comes from its one definition (:mod:`nsr_env.measures`, :mod:`analysis.metrics`);
every row also records every scenario field and the agent's capabilities, so strata and
agent groups can be read from the table alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import agents
from agents.base import CAPABILITIES
from analysis.metrics import average_accuracy, backward_transfer, forgetting
from nsr_env import measures
from nsr_env.recall import Recall
from nsr_env.scenarios import FIELDS, Scenario, make_scenario

OVERRIDE_COLUMNS = ["tasks_per_cycle", "cycles", "phase_length", "slots", "rank", "bank_capacity"]
"""The scenario fields every step row carries (the summary carries all of them)."""
SCENARIO_COLUMNS = [name for name in FIELDS if name not in ("name", "description")]


def summarise(steps: pd.DataFrame, matrix: np.ndarray, scenario: Scenario) -> dict:
    """The measures of one episode from its steps (``agents.evaluate`` rows) and accuracy matrix."""
    phases = steps.groupby("phase")
    phase_tasks = phases.task.first().to_numpy()
    recovery = phases.tail(1).recovery_steps.to_numpy()
    returning = measures.returning(phase_tasks)
    returning_recovery = measures.returning_recovery(phase_tasks, recovery, scenario.phase_length)
    phase_regret = phases.regret.sum().to_numpy()
    boundary = steps[steps.task_boundary]
    recalls = boundary[boundary.recall >= Recall.BANK]
    ranked = boundary[boundary.retrieval_rank >= 0]
    final = steps.iloc[-1]
    return {
        "returning_visits": int(returning.sum()),
        "cumulative_regret": float(steps.regret.sum()),
        "mean_recovery_steps": float(returning_recovery.mean()) if returning.any() else float("nan"),
        "censored_visits": int(((recovery < 0) & returning).sum()),
        "acc": average_accuracy(matrix, phase_tasks),
        "bwt": backward_transfer(matrix, phase_tasks),
        "forgetting": forgetting(matrix, phase_tasks),
        "bytes_per_task": float(final.bank_bytes / final.bank_size) if final.bank_size else float("nan"),
        "retrieval_precision": measures.retrieval_precision(recalls.recalled_task, recalls.task),
        "relevant_recall": float(recalls.relevant_recall.mean()) if len(recalls) else float("nan"),
        "own_entry_top1": float((ranked.retrieval_rank == 0).mean()) if len(ranked) else float("nan"),
        "first_visit_regret": float(phase_regret[~returning].mean()),
    }


def scenario_fields(scenario: Scenario) -> dict:
    """Every scenario field but its name and description, as summary columns."""
    return {column: getattr(scenario, column) for column in SCENARIO_COLUMNS}


def capabilities(agent: str) -> dict:
    """The agent's declared capabilities (``memoryless``, ``needs_training``, ``reads_hidden``), as columns."""
    return {name: bool(getattr(agents.AGENTS[agent], name)) for name in CAPABILITIES}


def completed(row: dict, agent: str, scenario: str, overrides: dict) -> dict:
    """``row`` with every recorded field: records written by an older sweep lack some scenario fields or
    the agent's capabilities, filled in here from the registries."""
    missing = {}
    if not all(column in row for column in SCENARIO_COLUMNS):
        missing |= scenario_fields(make_scenario(scenario, **overrides))
    if not all(column in row for column in CAPABILITIES):
        missing |= capabilities(agent)
    return missing | row if missing else row
