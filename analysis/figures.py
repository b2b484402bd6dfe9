"""The report's figures, and the regret curves they draw.

Figures are drawn on ``matplotlib.figure.Figure`` objects (rendered by Agg for PNG), never
through pyplot, so importing this module changes no global backend and a notebook (with
``%matplotlib inline``) can display what the ``*_figure`` functions return. Agents come in
:func:`analysis.capabilities.agent_order`, each in the colour of its place there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.capabilities import agent_order, colours
from analysis.format import format_number, safe_ratio
from analysis.results import STEPS_COLUMNS, Results, runs_of, stratum_order, with_strata
from analysis.stats import mean, stratified_bootstrap
from analysis.theorem1 import excess_regret, theorem1_fit, theorem1_frame
from nsr_env.recall import Recall

__all__ = [
    "accuracy_matrices_figure",
    "allocation_figure",
    "recovery_figure",
    "regret_curves",
    "regret_curves_figure",
    "theorem1_figure",
]

MAX_CURVE_POINTS = 200  # cumulative regret is monotone: 200 points per curve draw it faithfully
RECALL_MARKERS = {"fresh": ("o", "fresh"), "keep": ("s", "keep"), "recall": ("v", "bank recall")}
"""Per :meth:`Recall.kind`, the marker of a phase's start in the allocation figure and its legend label."""


def _steps_with_runs(results: Results) -> pd.DataFrame:
    """The steps of the summary's cells, labelled with their run (agent, stratum, seed)."""
    runs = results.summary[["cell", "agent", "stratum", "seed"]].drop_duplicates("cell")
    return results.steps[list(STEPS_COLUMNS)].merge(runs, on="cell")


def regret_curves(results: Results, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Cumulative regret against decision steps per agent and stratum: mean over seeds with a 95% bootstrap band.

    Columns ``agent, stratum, step, mean, low, high, n_seeds``; at most
    ``MAX_CURVE_POINTS`` steps per curve (always the last). Episodes are averaged per seed first.
    The rows come in agent order, which :func:`regret_curves_figure` takes its colours from.
    """
    steps = _steps_with_runs(results).sort_values(["agent", "stratum", "seed", "episode", "step"])
    steps["cumulative"] = steps.groupby(["agent", "stratum", "seed", "episode"], sort=False)["regret"].cumsum()
    per_seed = steps.groupby(["agent", "stratum", "seed", "step"])["cumulative"].mean().reset_index()
    rank = {agent: i for i, agent in enumerate(agent_order(results.summary))}
    frames = []
    for (agent, stratum), group in sorted(per_seed.groupby(["agent", "stratum"]), key=lambda item: rank[item[0][0]]):
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
    """One panel per stratum (in ``strata`` order): each agent's mean cumulative regret with its 95% band.

    Agents come in the order of their rows in ``curves``, and take their colours from it.
    """
    strata = [s for s in strata if s in set(curves["stratum"])]
    if not strata:
        return None
    palette = colours(dict.fromkeys(curves["agent"]))
    columns = min(4, len(strata))
    figure = Figure(figsize=(4.2 * columns, 3.2 * math.ceil(len(strata) / columns) + 0.6), layout="constrained")
    for axis, stratum in zip(_panel_grid(figure, len(strata)), strata, strict=True):
        panel = curves[curves["stratum"] == stratum]
        for agent in dict.fromkeys(panel["agent"]):
            line = panel[panel["agent"] == agent]
            n = int(line["n_seeds"].iloc[0])
            axis.plot(line["step"], line["mean"], color=palette[agent], label=f"{agent} ({n} seeds)")
            axis.fill_between(line["step"], line["low"], line["high"], color=palette[agent], alpha=0.2, linewidth=0)
        axis.set(title=stratum, xlabel="decision step", ylabel="cumulative regret")
        axis.legend(fontsize="small")
    figure.suptitle("Cumulative regret: mean over seeds, 95% bootstrap band")
    return figure


def theorem1_figure(summary: pd.DataFrame) -> Figure:
    """Excess regret over the reference against returning visits, each series' fitted line, slope, R², Delta_switch."""
    points = excess_regret(summary)
    reference = theorem1_frame(summary)[1]
    palette = colours(agent_order(summary))
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
        colour, marker = palette[row["agent"]], "os^Dv<>"[settings.index(name.removeprefix(row["agent"])) % 7]
        axis.scatter(group["returning_visits"], group["excess_regret"], color=colour, alpha=0.6, s=18, marker=marker)
        if pd.isna(row["slope"]):
            axis.scatter([], [], color=colour, marker=marker, label=f"{name}: one number of returning visits, no line")
            continue
        slope, in_delta = format_number(row["slope"]), format_number(safe_ratio(row["slope"], delta))
        label = f"{name}: slope {slope} = {in_delta}·Δ_switch, R² {format_number(row['r2'])}"
        style = ["-", "--", ":", "-."][settings.index(name.removeprefix(row["agent"])) % 4]
        axis.plot(x_line, row["intercept"] + row["slope"] * x_line, color=colour, linestyle=style, label=label)
    axis.axhline(0, color="0.5", linewidth=0.8)
    axis.set(
        xlabel="returning visits, (T-1)·M with one slot",
        ylabel=f"cumulative regret − {reference}'s (same stratum and seed)",
        title=f"Theorem 1: measured Δ_switch = {format_number(delta)} ({source})",
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
    runs = runs_of(with_strata(summary), ["returning_visits", "censored_visits"])
    totals = runs.groupby("agent")[["returning_visits", "censored_visits"]].sum()
    figure = Figure(figsize=(1.1 * len(rows) + 2.5, 4), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(rows))
    error = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
    palette = colours(agent_order(summary))
    axis.bar(positions, rows["mean"], yerr=error, capsize=4, color=[palette[a] for a in rows["agent"]])
    for position, (agent, top) in enumerate(zip(rows["agent"], rows["ci_high"], strict=True)):
        share = safe_ratio(totals.loc[agent, "censored_visits"], totals.loc[agent, "returning_visits"])
        if share > 0:
            axis.annotate(
                f"{format_number(100 * share)}% censored", (position, top), ha="center", va="bottom", fontsize="small"
            )
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
    for agent in (a for a in agent_order(results.summary) if a in first):
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
    agents = [a for a in agent_order(results.summary) if a in first and first[a][0] in set(steps["cell"])]
    if not agents:
        return None
    slots = int(results.summary.loc[results.summary["stratum"] == stratum, "slots"].max())
    figure = Figure(figsize=(12, 1.2 + (0.35 * slots + 1.1) * len(agents)), layout="constrained")
    axes = figure.subplots(len(agents), 1, sharex=True, squeeze=False).ravel()
    tasks = colormaps["tab10"]
    for axis, agent in zip(axes, agents, strict=True):
        cell, seed = first[agent]
        run = steps[steps["cell"] == cell].sort_values("step")
        starts = run.groupby("phase").agg(start=("step", "min"), end=("step", "max"), slot=("slot", "first"),
                                          task=("task", "first"), recall=("recall", "first"))  # fmt: skip
        for phase in starts.itertuples():
            axis.broken_barh(
                [(phase.start, phase.end + 1 - phase.start)], (phase.slot - 0.4, 0.8), facecolors=tasks(phase.task % 10)
            )
        kinds = starts["recall"].map(Recall.kind)
        for kind, (marker, _) in RECALL_MARKERS.items():
            chosen = starts[kinds == kind]
            axis.scatter(chosen["start"], chosen["slot"], marker=marker, color="white", edgecolor="black", zorder=3)
        axis.set(ylim=(-0.6, slots - 0.4), yticks=range(slots), ylabel="slot", title=f"{agent} (seed {seed})")
        bank = axis.twinx()
        bank.step(run["step"], run["bank_size"], where="post", color="0.3", linewidth=1)
        bank.set(ylabel="bank entries", ylim=(0, max(1, run["bank_size"].max()) * 1.1))
    axes[-1].set_xlabel("decision step")
    task_ids = sorted(int(t) for t in steps["task"].unique())
    handles = [Patch(color=tasks(t % 10), label=f"task {t}") for t in task_ids]
    handles += [
        Line2D([], [], marker=m, ls="", color="black", mfc="white", label=text) for m, text in RECALL_MARKERS.values()
    ]
    handles.append(Line2D([], [], color="0.3", label="bank entries"))
    figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle(f"Slot and bank allocation over time, {stratum}")
    return figure


# --- writing the report ---------------------------------------------------------------------------
