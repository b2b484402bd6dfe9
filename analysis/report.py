"""The report of a sweep's results directory: tables with confidence intervals, figures, paper vs ours.

``nsr report DIR`` calls :func:`write_report`, which reads what ``nsr sweep`` wrote into DIR
(``summary.csv``: one row per cell and episode; ``steps.csv``: one row per decision step;
``matrices.json``: the accuracy matrices) and writes into ``DIR/report``:

- ``metrics.{md,csv}``: per agent, for recovery steps, cumulative regret, ACC, BWT,
  forgetting, bytes per task and retrieval precision, the mean and the interquartile mean,
  each with a 95% stratified-bootstrap confidence interval over seeds (a stratum is one
  scenario with its overrides; see :mod:`analysis.stats`); ``metrics_by_stratum.{md,csv}``
  the same per stratum when there are several;
- ``theorem1.{md,csv}`` and ``theorem1.{png,pdf}``: cumulative regret in excess of the
  oracle's against the number of returning visits, one least-squares line per agent, beside
  the measured Delta_switch (:func:`theorem1_fit`);
- ``paper_vs_ours.{md,csv}``: the paper's headline figures beside ours (:func:`paper_vs_ours`);
- figures ``regret_curves``, ``recovery_steps``, ``accuracy_matrices``, ``allocation`` (PNG and PDF);
- ``report.md``, an index with every table inline and every figure linked.

A run is one (agent, stratum, seed); its numbers are averaged over its episodes first, so
seeds are the unit every confidence interval resamples. Figures are drawn on
``matplotlib.figure.Figure`` objects (rendered by Agg for PNG), never through pyplot, so
importing this module changes no global backend and a notebook (with ``%matplotlib inline``)
can display what the ``*_figure`` functions return. Every file is written to a hidden temporary name and renamed,
so a killed report never leaves a half-written file (``nsr_env.atomic``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.stats import iqm, mean, stratified_bootstrap
from nsr_env.atomic import atomic_write
from nsr_env.scenarios import FIELDS, SCENARIOS

__all__ = [
    "METRICS",
    "STRATUM_COLUMNS",
    "Report",
    "Results",
    "accuracy_matrices_figure",
    "allocation_figure",
    "excess_regret",
    "load_results",
    "metric_table",
    "paper_vs_ours",
    "recovery_figure",
    "regret_curves",
    "regret_curves_figure",
    "stratum_order",
    "theorem1_figure",
    "theorem1_fit",
    "write_report",
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
SUMMARY_COLUMNS = (
    "cell", "agent", "seed", "episode", *STRATUM_COLUMNS, "returning_visits", "censored_visits",
    "first_visit_regret", *METRICS,
)  # fmt: skip
STEPS_COLUMNS = ("cell", "episode", "step", "phase", "task", "slot", "recall", "regret", "task_boundary", "bank_size")
TEXT_COLUMNS = ("cell", "agent", "scenario")
AGENTS = ("similarity", "oracle", "fresh", "keep", "round_robin", "random", "ppo", "maskable_ppo")
"""The order agents appear in tables and figures (others follow, alphabetically), and their colours."""
ORACLE = "oracle"
MEMORYLESS = ("fresh", "keep", "round_robin", "random")
RECALL_FRESH, RECALL_KEEP, RECALL_BANK = 0, 1, 2
MAX_CURVE_POINTS = 200  # cumulative regret is monotone: 200 points per curve draw it faithfully
SWEEP_HINT = "run `nsr sweep CONFIG --out DIR` first, then `nsr report DIR`"


# --- reading a results directory ----------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """A sweep's results directory, read and checked: ``summary`` gains a ``stratum`` label column."""

    directory: Path
    summary: pd.DataFrame
    steps: pd.DataFrame
    matrices: dict[str, list[dict]]


def _checked(frame: pd.DataFrame, required: Iterable[str], source: str) -> pd.DataFrame:
    """``frame`` if it has every required column, the numeric ones numeric; else one ValueError naming them."""
    required = list(required)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source} lacks column(s) {', '.join(missing)}; it must be a table written by `nsr sweep` "
            "(re-run the sweep to rewrite it)"
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
    frame = _checked(pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}), required, str(path))
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
    summary = _with_strata(_read_csv(directory / "summary.csv", SUMMARY_COLUMNS))
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


def _with_strata(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus a ``stratum`` label: the scenario and the overrides that vary in ``frame`` ("default M=3").

    M, T, L, S, r and K are named whenever they vary; the other scenario fields only where
    they differ from the registered scenario's value ("default M=5 heads=slot"), so labels
    stay short when a sweep mixes scenarios.
    """
    frame = frame.copy()
    frame["stratum"] = frame["scenario"].astype(str) + _overrides_text(frame, _stratum_columns(frame)[1:])
    return frame


def _overrides_text(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """Per row, " name=value" for each of ``columns`` that varies in ``frame`` (see :func:`_with_strata`)."""
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


def _stratum_columns(frame: pd.DataFrame) -> list[str]:
    return [*STRATUM_COLUMNS, *(column for column in OTHER_SCENARIO_COLUMNS if column in frame)]


def stratum_order(frame: pd.DataFrame) -> list[str]:
    """The stratum labels of ``frame`` sorted by their numbers (M=2 before M=10), not as text."""
    unique = frame.drop_duplicates("stratum").sort_values(_stratum_columns(frame), na_position="last")
    return unique["stratum"].tolist()


def _agent_order(agents: Iterable[str]) -> list[str]:
    present = set(agents)
    return [a for a in AGENTS if a in present] + sorted(present - set(AGENTS))


def _colour(agent: str) -> tuple:
    index = AGENTS.index(agent) if agent in AGENTS else len(AGENTS) + sum(map(ord, agent))
    return colormaps["tab10"](index % 10)


def _runs(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """One row per run (agent, stratum, seed): ``columns`` averaged over its episodes (NaN-skipping)."""
    keys = ["agent", "stratum", "seed", *STRATUM_COLUMNS]
    return frame.groupby(keys, dropna=False, sort=True)[list(columns)].mean().reset_index()


# --- tables -----------------------------------------------------------------------------------


def metric_table(summary: pd.DataFrame, by_stratum: bool = False, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean and IQM with 95% stratified-bootstrap intervals over seeds, per agent (and stratum), per metric.

    Long format: one row per (agent, [stratum,] metric) with ``n_runs`` (runs, i.e. seeds summed
    over strata, with a value: NaNs such as the retrieval precision of an agent that never
    recalls are left out),
    ``mean``, ``ci_low``, ``ci_high``, ``iqm``, ``iqm_low``, ``iqm_high``. Pooled over strata
    (``by_stratum=False``), the estimate is over all runs and seeds are resampled within each
    stratum; per stratum it is the ordinary bootstrap over that stratum's seeds.
    """
    frame = _with_strata(_checked(summary, ["agent", "seed", *STRATUM_COLUMNS, *METRICS], "summary"))
    runs = _runs(frame, METRICS)
    groups = [["agent", "stratum"], ["agent"]][not by_stratum]
    rows = []
    for key, group in runs.groupby(groups, sort=False):
        row = dict(zip(groups, key, strict=True))
        if by_stratum:
            row.update(group.iloc[0][list(STRATUM_COLUMNS)].to_dict())
        for metric, label in METRICS.items():
            valid = group.dropna(subset=[metric])
            strata = [g[metric].to_numpy() for _, g in valid.groupby("stratum", sort=True)]
            estimates = {name: math.nan for name in ("mean", "ci_low", "ci_high", "iqm", "iqm_low", "iqm_high")}
            if strata:
                for name, statistic in (("mean", mean), ("iqm", iqm)):
                    value, low, high = stratified_bootstrap(strata, statistic, resamples, seed=seed)
                    low_name, high_name = ("ci_low", "ci_high") if name == "mean" else ("iqm_low", "iqm_high")
                    estimates |= {name: float(value), low_name: float(low), high_name: float(high)}
            rows.append({**row, "metric": metric, "label": label, "n_runs": len(valid), **estimates})
    table = pd.DataFrame(rows)
    order = {agent: i for i, agent in enumerate(_agent_order(table["agent"]))}
    sort = ["agent", "stratum"] if by_stratum else ["agent"]
    strata_rank = {s: i for i, s in enumerate(stratum_order(frame))}
    return table.sort_values(
        sort, key=lambda c: c.map(order if c.name == "agent" else strata_rank), kind="stable"
    ).reset_index(drop=True)


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


def _theorem1_runs(summary: pd.DataFrame) -> pd.DataFrame:
    required = ["agent", "seed", *STRATUM_COLUMNS, "returning_visits", "cumulative_regret", "first_visit_regret"]
    frame = _with_strata(_checked(summary, required, "summary"))
    if (frame["slots"] == 1).any():  # the theorem's setting; other strata (e.g. a 2-slot ablation) stay out
        frame = frame[frame["slots"] == 1]
    runs = _runs(frame, ["returning_visits", "cumulative_regret", "first_visit_regret"])
    varied = [c for c in _stratum_columns(frame) if c not in ("tasks_per_cycle", "cycles")]  # what a line keeps fixed
    setting = _overrides_text(frame, varied).str.strip()
    runs["setting"] = runs["stratum"].map(dict(zip(frame["stratum"], setting, strict=True)))
    if not (runs["agent"] == ORACLE).any():
        agents = ", ".join(_agent_order(runs["agent"]))
        raise ValueError(
            f"the Theorem 1 fit measures regret in excess of the oracle's, but the summary has no '{ORACLE}' "
            f"runs (agents: {agents}); add {ORACLE} to the sweep config's agents and run `nsr sweep` again"
        )
    return runs


def excess_regret(summary: pd.DataFrame) -> pd.DataFrame:
    """Cumulative regret in excess of the oracle's, per run with an oracle run of the same stratum and seed.

    Only one-slot strata count when the summary has any (the theorem's setting). One row
    per (agent, stratum, seed), the oracle excluded: ``returning_visits`` and
    ``excess_regret`` = the run's cumulative regret minus the oracle's (both averaged over
    episodes), and ``series``: the agent, plus the setting when the strata differ in more
    than M and T ("keep heads=slot"). Each series gets its own line. Raises ``ValueError``
    when the summary has no oracle runs.
    """
    runs = _theorem1_runs(summary)
    oracle = runs.loc[runs["agent"] == ORACLE, ["stratum", "seed", "cumulative_regret"]]
    points = runs[runs["agent"] != ORACLE].merge(oracle, on=["stratum", "seed"], suffixes=("", "_oracle"))
    points["excess_regret"] = points["cumulative_regret"] - points["cumulative_regret_oracle"]
    points["series"] = (points["agent"] + " " + points["setting"]).str.strip()
    columns = ["series", "agent", "stratum", *STRATUM_COLUMNS, "seed", "returning_visits", "excess_regret"]
    return points[columns]


def _delta_switch(runs: pd.DataFrame) -> tuple[float, str]:
    """Measured Delta_switch: the oracle's mean first-visit regret (a relearning from scratch), else fresh's."""
    for agent in (ORACLE, "fresh"):
        value = runs.loc[runs["agent"] == agent, "first_visit_regret"].mean()
        if pd.notna(value):
            return float(value), f"{agent} first_visit_regret"
    return math.nan, "unavailable"


def theorem1_fit(summary: pd.DataFrame) -> pd.DataFrame:
    """Per agent, the least-squares line of excess regret over the oracle against returning visits.

    Theorem 1: with capacity below the number of tasks, a memoryless policy relearns at every
    return, so its excess regret grows linearly with the returning visits ((T-1)M with one
    slot), slope about Delta_switch; a bank-backed policy's stays flat. One row per series
    (an agent in one setting, see :func:`excess_regret`; the oracle excluded): ``series``,
    ``agent``, ``slope``, ``intercept``, ``r2``, ``n_points`` (runs),
    ``delta_switch`` (the same measured value on every row) and ``delta_switch_source``
    (whose ``first_visit_regret`` it is: the oracle's, or fresh's if the oracle's is NaN).
    Raises ``ValueError`` when the summary has no oracle runs.
    """
    points = excess_regret(summary)
    delta, source = _delta_switch(_theorem1_runs(summary))
    rows = []
    order = {agent: i for i, agent in enumerate(_agent_order(points["agent"]))}
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


def _shared_means(runs: pd.DataFrame, metric: str, agents: list[str]) -> dict[str, float] | None:
    """Each agent's mean ``metric`` over the strata where all ``agents`` have a value; None if one has none."""
    valid = runs[runs["agent"].isin(agents)].dropna(subset=[metric])
    per_stratum = valid.groupby("stratum")["agent"].nunique()
    shared = valid[valid["stratum"].isin(per_stratum.index[per_stratum == len(agents)])]
    if shared.empty:
        return None
    return shared.groupby("agent")[metric].mean().to_dict()


def _ratio(numerator: float, denominator: float) -> float:
    if denominator != 0:
        return numerator / denominator
    return math.inf if numerator != 0 else math.nan


def _num(value: float) -> str:
    """A number for a table: n/a, ∞, thousands with separators, else three significant digits."""
    if pd.isna(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _times(ratio: float) -> str:
    """A ratio as "12.3x"; "∞" when it divides by an exact zero, "n/a (0 / 0)" when both are zero."""
    if math.isnan(ratio):
        return "n/a (0 / 0)"
    return "∞" if math.isinf(ratio) else f"{_num(ratio)}x"


def _with_similarity(runs: pd.DataFrame, metric: str) -> dict[str, dict[str, float]]:
    """Per memoryless heuristic, its and similarity's mean ``metric`` over the strata where both ran."""
    pairs = {agent: _shared_means(runs, metric, ["similarity", agent]) for agent in MEMORYLESS}
    return {agent: means for agent, means in pairs.items() if means is not None}


def _bwt_claim(frame: pd.DataFrame, runs: pd.DataFrame) -> tuple:
    """The BWT row: the memoryless heuristics' mean abs(BWT) over similarity's.

    Each heuristic is compared with similarity over the strata where both ran. Only strata
    with shared heads count when they hold such a pair: with a head per task almost
    nothing can be forgotten (measured BWT 0, or +0.002 with evictions).
    """
    claim, paper, paper_value = "closer to zero BWT than memoryless", "about 9x", 9.0
    shared_heads = set(frame.loc[frame["heads"] == "slot", "stratum"]) if "heads" in frame else set()
    pairs, where = _with_similarity(runs[runs["stratum"].isin(shared_heads)], "bwt"), ", shared heads (heads=slot) only"
    if not pairs:
        pairs, where = _with_similarity(runs, "bwt"), ""
    how = (
        "mean over the memoryless heuristics (fresh, keep, round_robin, random) of abs(BWT), / abs(BWT) of "
        "similarity, each over the strata where it and similarity ran" + where
    )
    if not pairs:
        return claim, paper, paper_value, math.nan, "not run (needs similarity and a memoryless heuristic)", how
    similarity = float(np.mean([means["similarity"] for means in pairs.values()]))
    ratio = _ratio(float(np.mean([abs(means[agent]) for agent, means in pairs.items()])), abs(similarity))
    detail = ", ".join([f"similarity {_num(similarity)}", *(f"{a} {_num(m[a])}" for a, m in pairs.items())])
    return claim, paper, paper_value, ratio, f"{_times(ratio)}: BWT {detail}", how


def _distillation_claim(frame: pd.DataFrame, runs: pd.DataFrame) -> tuple:
    """Ours only (the paper gives no figure): keep's abs(BWT) without distillation over with it, shared heads.

    Every stratum with distill_weight 0 is paired with each stratum that differs from it in
    distill_weight only; the ratio pools the pairs (several positive weights pool together).
    """
    claim, how = (
        "distillation protects earlier tasks",
        (
            "abs(BWT) of keep (naive fine-tuning of a shared slot) with distill_weight 0 / with distill_weight > 0; "
            "shared heads (heads=slot), pairs of strata that differ only in distill_weight"
        ),
    )
    not_run = (
        claim,
        "claimed, no figure",
        math.nan,
        math.nan,
        "not run (needs keep, heads=slot, distill_weight 0 and > 0)",
        how,
    )
    if not {"heads", "distill_weight"} <= set(frame):
        return not_run
    keep = frame[(frame["agent"] == "keep") & (frame["heads"] == "slot")]
    columns = [c for c in _stratum_columns(frame) if c != "distill_weight"]
    per_stratum = runs[runs["agent"] == "keep"].groupby("stratum")["bwt"].mean()
    strata = keep.drop_duplicates("stratum").assign(bwt=lambda f: f["stratum"].map(per_stratum))
    without = strata[strata["distill_weight"] == 0]
    with_ = strata[strata["distill_weight"] > 0]
    pairs = without.merge(with_, on=columns, suffixes=("_without", "_with")).dropna(subset=["bwt_without", "bwt_with"])
    if pairs.empty:
        return not_run
    before, after = pairs["bwt_without"].mean(), pairs["bwt_with"].mean()
    ratio = _ratio(abs(before), abs(after))
    return (
        claim,
        "claimed, no figure",
        math.nan,
        ratio,
        f"{_times(ratio)}: BWT of keep {_num(before)} -> {_num(after)}",
        how,
    )


def paper_vs_ours(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's headline figures beside ours, one row per claim.

    Columns: ``claim``, ``paper``, ``ours`` (text with the numbers behind it), ``paper_value``,
    ``ours_value`` (NaN when not run; inf when a ratio divides by an exact zero) and
    ``measured_as``. Ratios compare agents over the strata where both have a value.
    """
    frame = _with_strata(_checked(summary, ["agent", "seed", *STRATUM_COLUMNS, *METRICS], "summary"))
    runs = _runs(frame, METRICS)
    rows = []

    def add(claim: str, paper: str, paper_value: float, ours_value: float, ours: str, measured_as: str) -> None:
        rows.append(
            {"claim": claim, "paper": paper, "ours": ours, "paper_value": paper_value, "ours_value": ours_value,
             "measured_as": measured_as}
        )  # fmt: skip

    means = _shared_means(runs, "mean_recovery_steps", ["fresh", "similarity"])
    how = "fresh's mean recovery steps / similarity's, returning visits, strata where both ran"
    if means is None:
        add("bank cuts cyclic recovery time", "10x", 10.0, math.nan, "not run (needs fresh and similarity)", how)
    else:
        ratio = _ratio(means["fresh"], means["similarity"])
        detail = f"fresh {_num(means['fresh'])} / similarity {_num(means['similarity'])} steps"
        add("bank cuts cyclic recovery time", "10x", 10.0, ratio, f"{_times(ratio)}: {detail}", how)
    for agent, paper_text, paper_value in (("similarity", "0", 0.0), ("ppo", "1.8", 1.8), ("maskable_ppo", "1.8", 1.8)):
        means = _shared_means(runs, "mean_recovery_steps", [agent])
        value = math.nan if means is None else means[agent]
        ours = "not run" if means is None else f"{_num(value)} steps"
        claim = f"recovery steps, {agent}" + ("" if agent == "similarity" else " (paper: RL)")
        add(claim, paper_text, paper_value, value, ours, f"{agent}'s mean recovery steps over returning visits")
    add(*_bwt_claim(frame, runs))
    add(*_distillation_claim(frame, runs))
    means = _shared_means(runs, "bytes_per_task", ["similarity"])
    value = math.nan if means is None else means["similarity"] / 1e6
    ours = "not run" if means is None else f"{value:.3g} MB"
    add("bank memory per task", "0.29 MB", 0.29, value, ours, "similarity's bank bytes per task / 10^6")
    return pd.DataFrame(rows)


# --- figures ------------------------------------------------------------------------------------


def _steps_with_runs(results: Results) -> pd.DataFrame:
    """The steps of the summary's cells, labelled with their run (agent, stratum, seed)."""
    runs = results.summary[["cell", "agent", "stratum", "seed"]].drop_duplicates("cell")
    return results.steps[list(STEPS_COLUMNS)].merge(runs, on="cell")


def regret_curves(results: Results, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Cumulative regret against decision steps per agent and stratum: mean over seeds with a 95% bootstrap band.

    Columns ``agent, stratum, step, mean, low, high, n_seeds``; at most
    ``MAX_CURVE_POINTS`` steps per curve (always the last). Episodes are averaged per seed first.
    """
    steps = _steps_with_runs(results).sort_values(["agent", "stratum", "seed", "episode", "step"])
    steps["cumulative"] = steps.groupby(["agent", "stratum", "seed", "episode"], sort=False)["regret"].cumsum()
    per_seed = steps.groupby(["agent", "stratum", "seed", "step"])["cumulative"].mean().reset_index()
    frames = []
    for (agent, stratum), group in per_seed.groupby(["agent", "stratum"]):
        curves = group.pivot(index="step", columns="seed", values="cumulative").dropna()  # steps every seed has
        if curves.empty:
            continue
        pick = np.unique(np.linspace(0, len(curves) - 1, min(len(curves), MAX_CURVE_POINTS)).round().astype(int))
        values = curves.to_numpy()[pick].T  # (seeds, points)
        estimate, low, high = stratified_bootstrap([values], mean, resamples, seed=seed)
        curve = {"agent": agent, "stratum": stratum, "step": curves.index.to_numpy()[pick], "mean": estimate}
        frames.append(pd.DataFrame(curve | {"low": low, "high": high, "n_seeds": values.shape[0]}))
    columns = ["agent", "stratum", "step", "mean", "low", "high", "n_seeds"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _panel_grid(figure: Figure, count: int, columns: int = 4) -> list:
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return list(axes[:count])


def regret_curves_figure(curves: pd.DataFrame, strata: list[str]) -> Figure | None:
    """One panel per stratum (in ``strata`` order): each agent's mean cumulative regret with its 95% band."""
    strata = [s for s in strata if s in set(curves["stratum"])]
    if not strata:
        return None
    columns = min(4, len(strata))
    figure = Figure(figsize=(4.2 * columns, 3.2 * math.ceil(len(strata) / columns) + 0.6), layout="constrained")
    for axis, stratum in zip(_panel_grid(figure, len(strata)), strata, strict=True):
        panel = curves[curves["stratum"] == stratum]
        for agent in _agent_order(panel["agent"]):
            line = panel[panel["agent"] == agent]
            n = int(line["n_seeds"].iloc[0])
            axis.plot(line["step"], line["mean"], color=_colour(agent), label=f"{agent} ({n} seeds)")
            axis.fill_between(line["step"], line["low"], line["high"], color=_colour(agent), alpha=0.2, linewidth=0)
        axis.set(title=stratum, xlabel="decision step", ylabel="cumulative regret")
        axis.legend(fontsize="small")
    figure.suptitle("Cumulative regret: mean over seeds, 95% bootstrap band")
    return figure


def theorem1_figure(summary: pd.DataFrame) -> Figure:
    """Excess regret over the oracle against returning visits, each agent's fitted line, slope, R² and Delta_switch."""
    points = excess_regret(summary)
    fit = theorem1_fit(summary).set_index("series")
    delta, source = fit["delta_switch"].iloc[0], fit["delta_switch_source"].iloc[0]
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    axis = figure.subplots()
    x_line = np.array([0.0, float(points["returning_visits"].max())])
    settings = list(
        dict.fromkeys(name.removeprefix(agent) for name, agent in zip(fit.index, fit["agent"], strict=True))
    )
    for name, row in fit.iterrows():
        group = points[points["series"] == name]
        colour, marker = _colour(row["agent"]), "os^Dv<>"[settings.index(name.removeprefix(row["agent"])) % 7]
        axis.scatter(group["returning_visits"], group["excess_regret"], color=colour, alpha=0.6, s=18, marker=marker)
        if pd.isna(row["slope"]):
            axis.scatter([], [], color=colour, marker=marker, label=f"{name}: one number of returning visits, no line")
            continue
        label = (
            f"{name}: slope {_num(row['slope'])} = {_num(_ratio(row['slope'], delta))}·Δ_switch, R² {_num(row['r2'])}"
        )
        style = ["-", "--", ":", "-."][settings.index(name.removeprefix(row["agent"])) % 4]
        axis.plot(x_line, row["intercept"] + row["slope"] * x_line, color=colour, linestyle=style, label=label)
    axis.axhline(0, color="0.5", linewidth=0.8)
    axis.set(
        xlabel="returning visits, (T-1)·M with one slot",
        ylabel="cumulative regret − oracle's (same stratum and seed)",
        title=f"Theorem 1: measured Δ_switch = {_num(delta)} ({source})",
    )
    axis.legend(fontsize="small", loc="upper left")
    return figure


def recovery_figure(table: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """Bars of mean recovery steps per agent with 95% intervals (from :func:`metric_table`).

    A bar whose agent has censored visits (never recovered within the phase, counted at
    L + 1) is labelled with their share: its mean is then a lower bound.
    """
    rows = table[(table["metric"] == "mean_recovery_steps") & table["mean"].notna()]
    if rows.empty:
        return None
    runs = _runs(_with_strata(summary), ["returning_visits", "censored_visits"])
    totals = runs.groupby("agent")[["returning_visits", "censored_visits"]].sum()
    figure = Figure(figsize=(1.1 * len(rows) + 2.5, 4), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(rows))
    error = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
    axis.bar(positions, rows["mean"], yerr=error, capsize=4, color=[_colour(a) for a in rows["agent"]])
    for position, (agent, top) in enumerate(zip(rows["agent"], rows["ci_high"], strict=True)):
        share = _ratio(totals.loc[agent, "censored_visits"], totals.loc[agent, "returning_visits"])
        if share > 0:
            axis.annotate(f"{_num(100 * share)}% censored", (position, top), ha="center", va="bottom", fontsize="small")
    axis.set_xticks(positions, rows["agent"], rotation=30, ha="right")
    axis.set(ylabel="recovery steps (returning visits)", title="Recovery steps: mean over seeds, 95% bootstrap CI")
    return figure


def _first_runs(summary: pd.DataFrame) -> tuple[str, dict[str, tuple[str, int]]]:
    """The stratum most agents ran (ties: most returning visits), and per agent its first cell and seed there."""
    per_stratum = summary.groupby("stratum").agg(agents=("agent", "nunique"), visits=("returning_visits", "max"))
    rank = {s: i for i, s in enumerate(stratum_order(summary))}
    per_stratum["order"] = per_stratum.index.map(rank)
    stratum = per_stratum.sort_values(["agents", "visits", "order"], ascending=[False, False, True]).index[0]
    rows = summary[summary["stratum"] == stratum].sort_values(["seed", "episode"])
    first = rows.drop_duplicates("agent")
    return stratum, {a: (c, int(s)) for a, c, s in zip(first["agent"], first["cell"], first["seed"], strict=True)}


def _matrix(matrices: dict[str, list[dict]], cell: str) -> tuple[np.ndarray, list[int]] | None:
    """The first episode's accuracy matrix and phase tasks of ``cell``, or None when the cell has none."""
    entries = matrices.get(cell)
    if not entries:
        return None
    try:
        entry = min(entries, key=lambda e: e["episode"])
        R = np.asarray(entry["R"], dtype=float)
        tasks = [int(t) for t in entry["phase_tasks"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"matrices.json: cell {cell} must hold a list of {{'episode', 'phase_tasks', 'R'}}; "
            "re-run `nsr sweep` to rewrite it"
        ) from None
    if R.ndim != 2 or R.shape[0] != len(tasks):
        raise ValueError(f"matrices.json: cell {cell} has R of shape {R.shape} for {len(tasks)} phase_tasks")
    return R, tasks


def accuracy_matrices_figure(results: Results) -> Figure | None:
    """Accuracy-matrix heatmaps R[i, j], one per agent (its first seed, in the stratum most agents ran)."""
    stratum, first = _first_runs(results.summary)
    panels = []
    for agent in _agent_order(first):
        cell, seed = first[agent]
        matrix = _matrix(results.matrices, cell)
        if matrix is not None:
            panels.append((agent, seed, matrix))
    if not panels:
        return None
    columns = min(4, len(panels))
    figure = Figure(figsize=(3.6 * columns + 1, 3.6 * math.ceil(len(panels) / columns) + 0.6), layout="constrained")
    axes = _panel_grid(figure, len(panels))
    for axis, (agent, seed, (R, tasks)) in zip(axes, panels, strict=True):
        image = axis.imshow(R, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
        axis.set(title=f"{agent} (seed {seed})", xlabel="task j", ylabel="after phase i (task trained)")
        axis.set_xticks(range(R.shape[1]))
        if len(tasks) <= 20:
            axis.set_yticks(range(len(tasks)), [f"{i}: {t}" for i, t in enumerate(tasks)], fontsize="small")
    figure.colorbar(image, ax=axes, label="held-out accuracy", shrink=0.8)
    figure.suptitle(f"Accuracy matrices, {stratum}")
    return figure


def allocation_figure(results: Results) -> Figure | None:
    """Slot and bank allocation over time, one row per agent (first seed and episode): the paper's Figure 1 analogue.

    Each phase is a bar in the slot it trained, coloured by its (hidden) task; a marker at
    its start says how the slot was set up (fresh, keep, recall from the bank); the grey
    line (right axis) is the number of bank entries.
    """
    stratum, first = _first_runs(results.summary)
    steps = _steps_with_runs(results)
    cells = {cell for cell, _ in first.values()}
    steps = steps[steps["cell"].isin(cells)]
    steps = steps[steps["episode"] == steps.groupby("cell")["episode"].transform("min")]
    agents = [a for a in _agent_order(first) if first[a][0] in set(steps["cell"])]
    if not agents:
        return None
    slots = int(results.summary.loc[results.summary["stratum"] == stratum, "slots"].max())
    figure = Figure(figsize=(12, 1.2 + (0.35 * slots + 1.1) * len(agents)), layout="constrained")
    axes = figure.subplots(len(agents), 1, sharex=True, squeeze=False).ravel()
    tasks = colormaps["tab10"]
    markers = {"fresh": "o", "keep": "s", "bank recall": "v"}
    for axis, agent in zip(axes, agents, strict=True):
        cell, seed = first[agent]
        run = steps[steps["cell"] == cell].sort_values("step")
        starts = run.groupby("phase").agg(start=("step", "min"), end=("step", "max"), slot=("slot", "first"),
                                          task=("task", "first"), recall=("recall", "first"))  # fmt: skip
        for phase in starts.itertuples():
            axis.broken_barh(
                [(phase.start, phase.end + 1 - phase.start)], (phase.slot - 0.4, 0.8), facecolors=tasks(phase.task % 10)
            )
        kinds = np.where(starts["recall"] >= RECALL_BANK, "bank recall",
                         np.where(starts["recall"] == RECALL_KEEP, "keep", "fresh"))  # fmt: skip
        for kind, marker in markers.items():
            chosen = starts[kinds == kind]
            axis.scatter(chosen["start"], chosen["slot"], marker=marker, color="white", edgecolor="black", zorder=3)
        axis.set(ylim=(-0.6, slots - 0.4), yticks=range(slots), ylabel="slot", title=f"{agent} (seed {seed})")
        bank = axis.twinx()
        bank.step(run["step"], run["bank_size"], where="post", color="0.3", linewidth=1)
        bank.set(ylabel="bank entries", ylim=(0, max(1, run["bank_size"].max()) * 1.1))
    axes[-1].set_xlabel("decision step")
    task_ids = sorted(int(t) for t in steps["task"].unique())
    handles = [Patch(color=tasks(t % 10), label=f"task {t}") for t in task_ids]
    handles += [Line2D([], [], marker=m, ls="", color="black", mfc="white", label=k) for k, m in markers.items()]
    handles.append(Line2D([], [], color="0.3", label="bank entries"))
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle(f"Slot and bank allocation over time, {stratum}")
    return figure


# --- writing the report ---------------------------------------------------------------------------


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a ``|`` inside a cell is escaped."""
    lines = [header, *rows]
    text = ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join([text[0], "|" + "---|" * len(header), *text[1:]]) + "\n"


def _metrics_markdown(table: pd.DataFrame, by_stratum: bool) -> str:
    """Wide tables (agents x metrics) of ``mean [95% CI]``, then of ``IQM [95% CI]``, per stratum if asked."""
    sections = table.groupby("stratum", sort=False) if by_stratum else [("all strata pooled", table)]
    text = []
    for stratum, section in sections:
        for title, (value, low, high) in (
            ("mean [95% CI]", ("mean", "ci_low", "ci_high")),
            ("IQM [95% CI]", ("iqm", "iqm_low", "iqm_high")),
        ):
            rows = []
            for agent, group in section.groupby("agent", sort=False):
                cells = [
                    f"{_num(r[value])} [{_num(r[low])}, {_num(r[high])}]" if pd.notna(r[value]) else "n/a"
                    for r in group.to_dict("records")
                ]
                rows.append([agent, str(group["n_runs"].max()), *cells])
            text.append(f"### {stratum}: {title}\n\n" + _markdown(["agent", "runs", *METRICS.values()], rows))
    return "\n".join(text)


def _write_table(frame: pd.DataFrame, markdown: str, path: Path) -> list[Path]:
    csv, md = path.with_suffix(".csv"), path.with_suffix(".md")
    atomic_write(csv, lambda temporary: frame.to_csv(temporary, index=False))
    atomic_write(md, lambda temporary: temporary.write_text(markdown))
    return [md, csv]


def _write_figure(figure: Figure, path: Path) -> list[Path]:
    paths = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        atomic_write(target, lambda temporary, s=suffix: figure.savefig(temporary, format=s[1:], dpi=150))
        paths.append(target)
    return paths


def _remove(path: Path, suffixes: Iterable[str]) -> None:
    """Remove a previous report's output that this report does not produce, so none is left stale."""
    for suffix in suffixes:
        path.with_suffix(suffix).unlink(missing_ok=True)


@dataclass
class Report:
    """What :func:`write_report` wrote (Markdown before CSV, PNG before PDF) and what it skipped, and why."""

    directory: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    paper_vs_ours: str = ""


def write_report(directory: str | Path, resamples: int = 2000, seed: int = 0) -> Report:
    """Read a sweep's results directory and write its tables and figures into ``DIR/report``.

    ``resamples`` and ``seed`` set the bootstrap (the same seed gives the same intervals).
    Parts that the results cannot support (no oracle for Theorem 1, a single number of
    returning visits, no returning visits at all) are skipped and listed in ``skipped``.
    """
    results = load_results(directory)
    summary, out = results.summary, results.directory / "report"
    out.mkdir(exist_ok=True)
    report = Report(out)
    strata = stratum_order(summary)
    table = metric_table(summary, resamples=resamples, seed=seed)
    report.tables += _write_table(table, _metrics_markdown(table, by_stratum=False), out / "metrics")
    if len(strata) > 1:
        by_stratum = metric_table(summary, by_stratum=True, resamples=resamples, seed=seed)
        report.tables += _write_table(by_stratum, _metrics_markdown(by_stratum, True), out / "metrics_by_stratum")
    else:
        _remove(out / "metrics_by_stratum", (".md", ".csv"))
    paper = paper_vs_ours(summary)
    report.paper_vs_ours = _markdown(
        ["claim", "paper", "ours", "measured as"], paper[["claim", "paper", "ours", "measured_as"]].values.tolist()
    )
    report.tables += _write_table(paper, report.paper_vs_ours, out / "paper_vs_ours")
    paper_md = report.tables[-2]
    figures: dict[str, Figure | None] = {
        "regret_curves": regret_curves_figure(regret_curves(results, resamples, seed), strata),
        "recovery_steps": recovery_figure(table, summary),
        "accuracy_matrices": accuracy_matrices_figure(results),
        "allocation": allocation_figure(results),
    }
    if ORACLE not in set(summary["agent"]):
        report.skipped.append(f"Theorem 1 table and figure: no '{ORACLE}' runs to measure excess regret against")
    elif excess_regret(summary)["returning_visits"].nunique() < 2:
        report.skipped.append("Theorem 1 table and figure: the runs have fewer than two numbers of returning visits")
    else:
        fit = theorem1_fit(summary)
        rows = [[r.series, _num(r.slope), _num(r.intercept), _num(r.r2), str(r.n_points)] for r in fit.itertuples()]
        note = f"Measured Δ_switch = {_num(fit['delta_switch'].iloc[0])} ({fit['delta_switch_source'].iloc[0]}).\n\n"
        markdown = note + _markdown(["series", "slope", "intercept", "R²", "points"], rows)
        report.tables += _write_table(fit, markdown, out / "theorem1")
        figures["theorem1"] = theorem1_figure(summary)
    if "theorem1" not in figures:
        _remove(out / "theorem1", (".md", ".csv", ".png", ".pdf"))
    for name, figure in figures.items():
        if figure is None:
            report.skipped.append(f"{name} figure: no data for it in {results.directory}")
            _remove(out / name, (".png", ".pdf"))
        else:
            report.figures += _write_figure(figure, out / name)
    index = [f"# Report of {results.directory}\n", "## Paper vs ours\n", report.paper_vs_ours]
    index += [f"## {p.stem}\n\n{p.read_text()}" for p in report.tables if p.suffix == ".md" and p != paper_md]
    index += [f"![{p.stem}]({p.name})\n" for p in report.figures if p.suffix == ".png"]
    index += [f"Skipped: {s}.\n" for s in report.skipped]
    atomic_write(out / "report.md", lambda temporary: temporary.write_text("\n".join(index)))
    return report
