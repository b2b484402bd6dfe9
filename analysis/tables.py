"""Per-agent metric tables with stratified-bootstrap confidence intervals, and tables as Markdown."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.capabilities import agent_order
from analysis.format import format_number
from analysis.results import CAPABILITY_COLUMNS, METRICS, STRATUM_COLUMNS, checked, runs_of, stratum_order, with_strata
from analysis.stats import iqm, mean, stratified_bootstrap

__all__ = ["metric_table"]


def metric_table(summary: pd.DataFrame, by_stratum: bool = False, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean and IQM with 95% stratified-bootstrap intervals over seeds, per agent (and stratum), per metric.

    Long format: one row per (agent, [stratum,] metric) with ``n_runs`` (runs, i.e. seeds summed
    over strata, with a value: NaNs such as the retrieval precision of an agent that never
    recalls are left out),
    ``mean``, ``ci_low``, ``ci_high``, ``iqm``, ``iqm_low``, ``iqm_high``. Pooled over strata
    (``by_stratum=False``), the estimate is over all runs and seeds are resampled within each
    stratum; per stratum it is the ordinary bootstrap over that stratum's seeds. Agents come in
    :func:`analysis.capabilities.agent_order`.
    """
    required = ["agent", "seed", *STRATUM_COLUMNS, *CAPABILITY_COLUMNS, *METRICS]
    frame = with_strata(checked(summary, required, "summary"))
    runs = runs_of(frame, METRICS)
    groups = [["agent", "stratum"], ["agent"]][not by_stratum]
    rows = []
    for key, group in runs.groupby(groups, sort=False):
        row = dict(zip(groups, key, strict=True))
        if by_stratum:
            row.update(group.iloc[0][list(STRATUM_COLUMNS)].to_dict())
        rows.extend({**row, **estimates} for estimates in _estimates(group, resamples, seed))
    table = pd.DataFrame(rows)
    order = {agent: i for i, agent in enumerate(agent_order(frame))}
    sort = ["agent", "stratum"] if by_stratum else ["agent"]
    strata_rank = {s: i for i, s in enumerate(stratum_order(frame))}
    return table.sort_values(
        sort, key=lambda c: c.map(order if c.name == "agent" else strata_rank), kind="stable"
    ).reset_index(drop=True)


def _mean_and_iqm(values: np.ndarray, axis: int) -> np.ndarray:
    return np.stack([mean(values, axis), iqm(values, axis)])


def _estimates(runs: pd.DataFrame, resamples: int, seed: int) -> list[dict]:
    """One record per metric of ``runs`` (one agent's): mean and IQM with their intervals.

    Metrics that are missing (NaN) for the same runs share one bootstrap of a vector statistic,
    so a table costs a few bootstraps per agent rather than two per metric.
    """
    missing = runs[list(METRICS)].isna()
    shared: dict[tuple[bool, ...], list[str]] = {}
    for metric in METRICS:
        shared.setdefault(tuple(missing[metric]), []).append(metric)
    records = {}
    for metrics in shared.values():
        valid = runs[~missing[metrics[0]]]
        names = ("mean", "ci_low", "ci_high", "iqm", "iqm_low", "iqm_high")
        estimates = np.full((len(names), len(metrics)), math.nan)
        if len(valid):
            strata = [g[metrics].to_numpy(dtype=float) for _, g in valid.groupby("stratum", sort=True)]
            value, low, high = stratified_bootstrap(strata, _mean_and_iqm, resamples, seed=seed)
            estimates = np.stack([value[0], low[0], high[0], value[1], low[1], high[1]])
        for i, metric in enumerate(metrics):
            records[metric] = {"n_runs": len(valid), **dict(zip(names, map(float, estimates[:, i]), strict=True))}
    return [{"metric": metric, "label": label, **records[metric]} for metric, label in METRICS.items()]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a ``|`` inside a cell is escaped."""
    lines = [header, *rows]
    text = ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join([text[0], "|" + "---|" * len(header), *text[1:]]) + "\n"


def metrics_markdown(table: pd.DataFrame, by_stratum: bool) -> str:
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
                    f"{format_number(r[value])} [{format_number(r[low])}, {format_number(r[high])}]"
                    if pd.notna(r[value])
                    else "n/a"
                    for r in group.to_dict("records")
                ]
                rows.append([agent, str(group["n_runs"].max()), *cells])
            text.append(f"### {stratum}: {title}\n\n" + markdown_table(["agent", "runs", *METRICS.values()], rows))
    return "\n".join(text)
