"""The memory designs compared: per stream, one row per design (memory mechanism and protection rule) and agent.

A design is what a stratum's ``memory`` and ``protect`` fields say ("share", or "svd + eblora" when the
protection rule is not the default distillation). The numbers are the by-stratum metric table's
(mean [95% stratified-bootstrap CI] over seeds), so this table adds no statistics of its own.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from analysis.format import format_number
from analysis.results import with_strata
from analysis.tables import markdown_table

__all__ = ["DESIGN_METRICS", "design_of", "mechanisms_figure", "mechanisms_markdown", "mechanisms_table"]

DESIGN_METRICS = {
    "cumulative_regret": "regret",
    "mean_recovery_steps": "recovery",
    "acc": "ACC",
    "bwt": "BWT",
    "bytes_per_task": "kB per task",
    "retrieval_precision": "precision",
}
DEFAULT_PROTECTION = "distill"


def design_of(memory: str, protect: str) -> str:
    """A design's name: the memory, and the protection rule where it is not the default."""
    return memory if protect == DEFAULT_PROTECTION else f"{memory} + {protect}"


def mechanisms_table(by_stratum: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame | None:
    """The by-stratum metrics of :data:`DESIGN_METRICS`, labelled by stream and design; None when the
    results hold a single design (nothing to compare)."""
    labelled = with_strata(summary)
    if "memory" not in labelled or "protect" not in labelled:
        return None
    if len(labelled[["memory", "protect"]].drop_duplicates()) < 2:
        return None
    designs = labelled.drop_duplicates("stratum").set_index("stratum")
    table = by_stratum[by_stratum["metric"].isin(DESIGN_METRICS)].copy()
    table["design"] = [design_of(designs.at[s, "memory"], designs.at[s, "protect"]) for s in table["stratum"]]
    design_part = r" (memory|protect)=\S+"  # the stream is the stratum less its design
    table["stream"] = table["stratum"].str.replace(design_part, "", regex=True)
    bytes_rows = table["metric"] == "bytes_per_task"
    table.loc[bytes_rows, ["mean", "ci_low", "ci_high"]] /= 1e3
    columns = ["stream", "design", "agent", "stratum", "metric", "n_runs", "mean", "ci_low", "ci_high"]
    return table[columns].reset_index(drop=True)


def mechanisms_markdown(table: pd.DataFrame) -> str:
    """One Markdown table: a row per stream, design and agent; a column per metric, ``mean [95% CI]``."""
    rows = []
    for (stream, design, agent), group in table.groupby(["stream", "design", "agent"], sort=False):
        values = group.set_index("metric")
        cells = []
        for metric in DESIGN_METRICS:
            r = values.loc[metric] if metric in values.index else None
            if r is None or pd.isna(r["mean"]):
                cells.append("n/a")
            else:
                low, high = format_number(r["ci_low"]), format_number(r["ci_high"])
                cells.append(f"{format_number(r['mean'])} [{low}, {high}]")
        rows.append([stream, design, agent, str(int(values["n_runs"].max())), *cells])
    header = ["stream", "design", "agent", "runs", *DESIGN_METRICS.values()]
    return "Mean [95% CI] over seeds; kB per task includes shared parts.\n\n" + markdown_table(header, rows)


def mechanisms_figure(table: pd.DataFrame) -> Figure:
    """Cumulative regret per design, one panel per stream, one bar group per agent, with 95% CIs."""
    regret = table[table["metric"] == "cumulative_regret"]
    streams = list(dict.fromkeys(regret["stream"]))
    designs = list(dict.fromkeys(regret["design"]))
    figure = Figure(figsize=(4.5 * len(streams), 3.6), layout="constrained")
    axes = figure.subplots(1, len(streams), squeeze=False)[0]
    width = 0.8 / len(designs)
    for axis, stream in zip(axes, streams, strict=True):
        part = regret[regret["stream"] == stream]
        agents = list(dict.fromkeys(part["agent"]))
        for i, design in enumerate(designs):
            rows = part[part["design"] == design].set_index("agent").reindex(agents)
            x = [j + (i - (len(designs) - 1) / 2) * width for j in range(len(agents))]
            error = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
            axis.bar(x, rows["mean"], width, yerr=error, capsize=2, label=design)
        axis.set_xticks(range(len(agents)), agents, rotation=30)
        axis.set_title(stream)
        axis.set_ylabel("cumulative regret")
    axes[0].legend(fontsize=8)
    return figure
