"""A sweep's results directory, read and checked, with every row labelled by its stratum.

``nsr sweep`` writes ``summary.csv`` (one row per cell and episode), ``steps.csv`` (one row
per decision step) and ``matrices.json`` (the accuracy matrices). A stratum is one scenario
with its overrides, and a run one (agent, stratum, seed): its numbers are averaged over its
episodes first, so seeds are the unit every confidence interval resamples (:mod:`analysis.stats`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nsr_env.scenarios import FIELDS, SCENARIOS

__all__ = [
    "CAPABILITY_COLUMNS",
    "METRICS",
    "STRATUM_COLUMNS",
    "SUMMARY_COLUMNS",
    "SWEEP_HINT",
    "Results",
    "load_results",
    "stratum_order",
]

STRATUM_COLUMNS = ("scenario", "tasks_per_cycle", "cycles", "phase_length", "slots", "rank", "bank_capacity")
"""A stratum: one scenario with its overrides. Seeds are resampled within strata."""
OTHER_SCENARIO_COLUMNS = tuple(name for name in FIELDS if name not in ("name", "description", *STRATUM_COLUMNS))
"""The other scenario fields: ``nsr sweep`` records them all, and those that vary split strata too."""
SHORT = {
    "tasks_per_cycle": "M",
    "cycles": "T",
    "phase_length": "L",
    "slots": "S",
    "rank": "r",
    "bank_capacity": "K",
    "distill_weight": "distill",
}
METRICS = {
    "mean_recovery_steps": "recovery steps",
    "cumulative_regret": "cumulative regret",
    "acc": "ACC",
    "bwt": "BWT",
    "forgetting": "forgetting",
    "bytes_per_task": "bytes per task",
    "retrieval_precision": "retrieval precision",
}
"""The per-episode metrics of ``summary.csv`` and their labels in tables."""
CAPABILITY_COLUMNS = ("reads_hidden", "memoryless", "needs_training")
"""What the agent of a row declares it does (see :mod:`analysis.capabilities`)."""
SUMMARY_COLUMNS = (
    "cell", "agent", "seed", "episode", *STRATUM_COLUMNS, *CAPABILITY_COLUMNS, "returning_visits", "censored_visits",
    "first_visit_regret", *METRICS,
)  # fmt: skip
STEPS_COLUMNS = ("cell", "episode", "step", "phase", "task", "slot", "recall", "regret", "task_boundary", "bank_size")
TEXT_COLUMNS = ("cell", "agent", "scenario")
SWEEP_HINT = "run `nsr sweep CONFIG --out DIR` first, then `nsr report DIR`"


@dataclass(frozen=True)
class Results:
    """A sweep's results directory, read and checked: ``summary`` gains a ``stratum`` label column."""

    directory: Path
    summary: pd.DataFrame
    steps: pd.DataFrame
    matrices: dict[str, list[dict]]


def checked(frame: pd.DataFrame, required: Iterable[str], source: str) -> pd.DataFrame:
    """``frame`` if it has every required column, the numeric ones numeric; else one ValueError naming them."""
    required = list(required)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source} lacks column(s) {', '.join(missing)}; it must be a table written by `nsr sweep` "
            "(re-run `nsr sweep` with the same command to rewrite it)"
        )
    for column in required:
        values = frame[column]
        if column not in TEXT_COLUMNS and not (
            pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        ):
            example = values.dropna().iloc[0] if values.notna().any() else None
            raise ValueError(f"{source}: column {column} must be numeric, found {example!r}")
    return frame


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {SWEEP_HINT}")
    frame = checked(pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}), required, str(path))
    if frame.empty:
        raise ValueError(f"{path} has no rows; let `nsr sweep` finish at least one cell, then run `nsr report` again")
    return frame


def load_results(directory: str | Path) -> Results:
    """Read ``summary.csv``, ``steps.csv`` and ``matrices.json`` from a sweep's results directory.

    A missing directory or file raises ``FileNotFoundError``, a missing or non-numeric column
    ``ValueError``, each naming what is wrong and what to run.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"results directory {directory} does not exist; {SWEEP_HINT}")
    summary = with_strata(_read_csv(directory / "summary.csv", SUMMARY_COLUMNS))
    steps = _read_csv(directory / "steps.csv", STEPS_COLUMNS)
    path = directory / "matrices.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {SWEEP_HINT}")
    try:
        matrices = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-run `nsr sweep` to rewrite it") from None
    if not isinstance(matrices, dict):
        raise ValueError(f"{path} must map cell ids to lists of accuracy matrices; re-run `nsr sweep` to rewrite it")
    return Results(directory, summary, steps, matrices)


def _value_text(value: object) -> str:
    if pd.isna(value):
        return "none"
    if isinstance(value, (str, bool, np.bool_)):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.12g}"  # 12 digits: distinct values stay distinct


def with_strata(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus a ``stratum`` label: the scenario and the overrides that vary in ``frame`` ("default M=3").

    M, T, L, S, r and K are named whenever they vary; the other scenario fields only where
    they differ from the registered scenario's value ("default M=5 heads=slot"), so labels
    stay short when a sweep mixes scenarios.
    """
    frame = frame.copy()
    frame["stratum"] = frame["scenario"].astype(str) + overrides_text(frame, stratum_columns(frame)[1:])
    return frame


def overrides_text(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """Per row, " name=value" for each of ``columns`` that varies in ``frame`` (see :func:`with_strata`)."""
    text = pd.Series("", index=frame.index)
    for column in columns:
        if frame[column].nunique(dropna=False) == 1:
            continue
        values = frame[column].map(_value_text)
        part = f" {SHORT.get(column, column)}=" + values
        if column in OTHER_SCENARIO_COLUMNS:
            names = frame["scenario"].unique()
            registered = frame["scenario"].map({n: _value_text(getattr(SCENARIOS.get(n), column, None)) for n in names})
            part = part.where(values != registered, "")
        text = text + part
    return text


def stratum_columns(frame: pd.DataFrame) -> list[str]:
    return [*STRATUM_COLUMNS, *(column for column in OTHER_SCENARIO_COLUMNS if column in frame)]


def stratum_order(frame: pd.DataFrame) -> list[str]:
    """The stratum labels of ``frame`` sorted by their numbers (M=2 before M=10), not as text."""
    unique = frame.drop_duplicates("stratum").sort_values(stratum_columns(frame), na_position="last")
    return unique["stratum"].tolist()


def runs_of(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """One row per run (agent, stratum, seed): ``columns`` averaged over its episodes (NaN-skipping)."""
    keys = ["agent", "stratum", "seed", *STRATUM_COLUMNS]
    return frame.groupby(keys, dropna=False, sort=True)[list(columns)].mean().reset_index()
