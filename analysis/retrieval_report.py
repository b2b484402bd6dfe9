"""The retrieval experiment's part of the report: precision@1 against memory size, threshold sensitivity, adapter gain.

Reads what :func:`analysis.retrieval.run_retrieval` wrote into ``DIR/retrieval`` (pandas and
matplotlib only, no torch, like the rest of ``nsr report``). :func:`retrieval_part` returns,
or None when the directory has no ``retrieval/queries.csv``:

- ``retrieval_precision`` (table and figure): precision@1, the share of queries whose top
  entry is the task's own, against the number of stored entries, per (key, energy), with a
  95% bootstrap interval over tasks (a task's probes are averaged first);
- ``threshold_sensitivity`` (table and figure): the rule "recall the top entry if its score
  is at least t, else start fresh" at the largest memory, per key and energy: the shares of
  correct recalls, wrong recalls and no recall against t over the observed top scores. Every
  query comes from a stored task, so a correct recall is all the rule can get right: the
  correct share only falls with t, and the marked range is where it is still at its maximum
  (a threshold there turns wrong recalls into fresh starts without losing a correct one);
- ``adapter_contribution`` (table): held-out accuracy with the adapter minus with the frozen
  layer and the same head, summarised, with one row per task in the CSV.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from analysis.format import format_number
from analysis.stats import mean, stratified_bootstrap
from analysis.tables import markdown_table

__all__ = [
    "QUERY_COLUMNS",
    "RETRIEVAL_NAMES",
    "TASK_COLUMNS",
    "Retrieval",
    "RetrievalPart",
    "contribution_markdown",
    "energy_columns",
    "load_retrieval",
    "precision_at_1",
    "precision_figure",
    "precision_markdown",
    "retrieval_part",
    "threshold_curves",
    "threshold_figure",
    "threshold_markdown",
]

QUERY_COLUMNS = (
    "energy", "entries", "key", "task", "probe", "top_task", "top_score", "own_score", "own_rank", "best_other_score",
)  # fmt: skip
"""Per query: the bank (energy, entries), the key kind, the queried task and probe draw, the task of the
top-scoring entry and its score, the own entry's score and rank (1 = top; ties go to the lower position,
as the top entry does), and the best score among the other entries (NaN in a one-entry bank)."""
TASK_COLUMNS = ("task", "name", "family", "reference", "accuracy", "base_accuracy", "contribution")
"""Per task: a* (``reference``), the held-out accuracy after training alone, the accuracy of the same head on
the frozen layer (the adapter zeroed), and their difference, what the adapter itself adds."""
TEXT_COLUMNS = ("key", "name", "family")
RETRIEVAL_NAMES = ("retrieval_precision", "threshold_sensitivity", "adapter_contribution")
"""The report files of this part (a table, and a figure for the first two, under each name)."""
CONTRIBUTION_MARGIN = 0.01
"""An adapter "adds" to its task when it raises held-out accuracy by more than this."""
OUTCOMES = (
    ("correct", "tab:green", "correct recall"),
    ("wrong", "tab:red", "wrong recall"),
    ("none", "0.5", "no recall"),
)
"""The threshold figure's lines: column, colour, label."""
RERUN = "re-run `nsr retrieval --out DIR` to rewrite it"


def energy_columns(energy: float) -> tuple[str, str]:
    """The ``tasks.csv`` columns of one energy: the rank of a task's entry and its bytes (factors, head, key)."""
    return f"rank_e{energy:g}", f"bytes_e{energy:g}"


@dataclass(frozen=True)
class Retrieval:
    """The files of ``DIR/retrieval``, read and checked."""

    directory: Path
    queries: pd.DataFrame
    tasks: pd.DataFrame
    config: dict


@dataclass
class RetrievalPart:
    """The report's retrieval tables (name -> frame and Markdown) and figures (name -> figure)."""

    tables: dict[str, tuple[pd.DataFrame, str]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV with every required column, the non-text ones numeric, at least one row; else one error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {RERUN}")
    frame = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; {RERUN}")
    for column in required:
        if column not in TEXT_COLUMNS and not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{path}: column {column} must be numeric, found {frame[column].iloc[0]!r}; {RERUN}")
    if frame.empty:
        raise ValueError(f"{path} has no rows; {RERUN}")
    return frame


def load_retrieval(directory: str | Path) -> Retrieval | None:
    """``DIR/retrieval``'s queries, tasks and config, or None when ``DIR/retrieval/queries.csv`` does not exist."""
    folder = Path(directory) / "retrieval"
    if not (folder / "queries.csv").is_file():
        return None
    queries = _read(folder / "queries.csv", QUERY_COLUMNS)
    tasks = _read(folder / "tasks.csv", TASK_COLUMNS)
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {RERUN}") from None
    return Retrieval(folder, queries, tasks, config)


def _series(frame: pd.DataFrame) -> list[tuple[str, float]]:
    """The (key, energy) pairs of ``frame`` in the order the experiment ran the keys, energies ascending."""
    keys = list(dict.fromkeys(frame["key"]))
    pairs = frame[["key", "energy"]].drop_duplicates()
    return sorted(pairs.itertuples(index=False, name=None), key=lambda pair: (keys.index(pair[0]), pair[1]))


def precision_at_1(queries: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Precision@1 per (key, energy, entries): the mean over tasks of each task's share of top-1 hits, with a 95%
    bootstrap interval resampling tasks. Columns ``key, energy, entries, precision, ci_low, ci_high, tasks,
    queries``."""
    hits = queries.assign(hit=(queries["top_task"] == queries["task"]).astype(float))
    per_task = hits.groupby(["key", "energy", "entries", "task"], sort=False)["hit"].agg(["mean", "size"]).reset_index()
    rows = []
    for key, energy in _series(queries):
        series = per_task[(per_task["key"] == key) & (per_task["energy"] == energy)]
        for entries, group in series.groupby("entries"):
            estimate, low, high = stratified_bootstrap([group["mean"].to_numpy()], mean, resamples, seed=seed)
            rows.append({"key": key, "energy": energy, "entries": entries, "precision": float(estimate),
                         "ci_low": float(low), "ci_high": float(high), "tasks": len(group),
                         "queries": int(group["size"].sum())})  # fmt: skip
    return pd.DataFrame(rows)


def _label(key: str, energies: list[float]) -> str:
    return f"{key}, energy {', '.join(f'{e:g}' for e in energies)}"


def precision_markdown(table: pd.DataFrame) -> str:
    """Rows (key, energy), columns the numbers of entries: ``precision [95% CI]``."""
    sizes = sorted(table["entries"].unique())
    rows = []
    for (key, energy), group in table.groupby(["key", "energy"], sort=False):
        cells = group.set_index("entries")
        rows.append([key, f"{energy:g}", *(
            f"{format_number(cells.loc[n, 'precision'])} [{format_number(cells.loc[n, 'ci_low'])}, "
            f"{format_number(cells.loc[n, 'ci_high'])}]" for n in sizes
        )])  # fmt: skip
    note = "Precision@1 (the top entry is the task's own): mean over tasks [95% bootstrap CI], by stored entries.\n\n"
    return note + markdown_table(["key", "energy", *(f"{n} entries" for n in sizes)], rows)


def precision_figure(table: pd.DataFrame) -> Figure:
    """Precision@1 against stored entries, one line per (key, energy): colour per key, line style per energy."""
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axis = figure.subplots()
    keys, energies = list(dict.fromkeys(table["key"])), sorted(table["energy"].unique())
    palette, styles = colormaps["tab10"], ["-", "--", ":", "-."]
    for (key, energy), line in table.groupby(["key", "energy"], sort=False):
        colour, style = palette(keys.index(key) % 10), styles[energies.index(energy) % 4]
        axis.plot(
            line["entries"], line["precision"], color=colour, linestyle=style, marker="o", label=_label(key, [energy])
        )
        axis.fill_between(line["entries"], line["ci_low"], line["ci_high"], color=colour, alpha=0.12, linewidth=0)
    sizes = np.array(sorted(table["entries"].unique()), dtype=float)
    axis.plot(sizes, 1 / sizes, color="0.5", linestyle=":", linewidth=1, label="chance, 1 / entries")
    if sizes.max() >= 10 * sizes.min():
        axis.set_xscale("log")
    axis.set(xlabel="stored entries N", ylabel="precision@1", ylim=(0, 1.03),
             title="Retrieval precision@1: mean over tasks, 95% bootstrap CI")  # fmt: skip
    axis.legend(fontsize="small", loc="center right")
    return figure


def threshold_curves(queries: pd.DataFrame) -> pd.DataFrame:
    """At the largest number of entries, per (key, energy) and threshold t (each observed top score, ascending):
    the shares of queries with a correct recall (top is own, score >= t), a wrong recall (top is another's,
    score >= t) and no recall (score < t). ``best`` marks the thresholds where the correct share is highest."""
    largest = queries[queries["entries"] == queries["entries"].max()]
    frames = []
    for key, energy in _series(largest):
        group = largest[(largest["key"] == key) & (largest["energy"] == energy)]
        scores, hit = group["top_score"].to_numpy(), (group["top_task"] == group["task"]).to_numpy()
        thresholds = np.unique(scores)
        recalled = scores[None, :] >= thresholds[:, None]  # (thresholds, queries)
        correct, wrong = (recalled & hit).mean(axis=1), (recalled & ~hit).mean(axis=1)
        frames.append(pd.DataFrame({
            "key": key, "energy": energy, "entries": int(group["entries"].iloc[0]), "threshold": thresholds,
            "correct": correct, "wrong": wrong, "none": (~recalled).mean(axis=1), "best": correct == correct.max(),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _distinct(curves: pd.DataFrame) -> list[tuple[str, list[float], pd.DataFrame]]:
    """Per key, its energies grouped by identical curves (input and pooled keys do not depend on the energy)."""
    panels: list[tuple[str, list[float], pd.DataFrame]] = []
    for key, energy in _series(curves):
        curve = curves[(curves["key"] == key) & (curves["energy"] == energy)].reset_index(drop=True)
        values = curve[["threshold", "correct", "wrong"]]
        same = next((p for p in panels if p[0] == key and p[2][["threshold", "correct", "wrong"]].equals(values)), None)
        if same is None:
            panels.append((key, [energy], curve))
        else:
            same[1].append(energy)
    return panels


def threshold_markdown(curves: pd.DataFrame) -> str:
    """Per key and distinct energy: the most correct recalls, the highest threshold that keeps them, and the
    wrong recalls at the lowest threshold (recall always) and at that one (the best the rule can do)."""
    rows = []
    for key, energies, curve in _distinct(curves):
        best = curve[curve["best"]].iloc[-1]
        rows.append([
            key, ", ".join(f"{e:g}" for e in energies), format_number(best["correct"]),
            format_number(best["threshold"]), format_number(curve["wrong"].iloc[0]), format_number(best["wrong"]),
            format_number(best["none"]),
        ])  # fmt: skip
    entries = int(curves["entries"].iloc[0])
    note = (
        f'The rule "recall the top entry if its score >= t, else fresh" with {entries} stored entries. Every query '
        "comes from a stored task, so the correct share only falls as t rises: any t up to the highest one listed "
        "keeps the most correct recalls.\n\n"
    )
    header = ["key", "energy", "most correct", "highest t keeping it", "wrong, always recall", "wrong at that t",
              "no recall at that t"]  # fmt: skip
    return note + markdown_table(header, rows)


def threshold_figure(curves: pd.DataFrame) -> Figure:
    """One panel per key and distinct energy: correct, wrong and no-recall shares against t, the best range shaded."""
    panels = _distinct(curves)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.3 * columns, 3.3 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[len(panels) :]:
        extra.set_visible(False)
    for axis, (key, energies, curve) in zip(axes, panels, strict=False):
        for column, colour, label in OUTCOMES:
            axis.step(curve["threshold"], curve[column], where="post", color=colour, label=label)
        best = curve.loc[curve["best"], "threshold"]
        axis.axvspan(best.min(), best.max(), color="tab:green", alpha=0.12, label="most correct recalls")
        axis.axvline(best.max(), color="tab:green", linestyle="--", linewidth=1)
        axis.set(title=_label(key, energies), xlabel="threshold t on the top score", ylabel="share of queries",
                 ylim=(-0.02, 1.02))  # fmt: skip
        axis.legend(fontsize="x-small")
    figure.suptitle(f"Threshold sensitivity of recall-if-score>=t, {int(curves['entries'].iloc[0])} stored entries")
    return figure


def contribution_markdown(tasks: pd.DataFrame, steps: int | None = None) -> str:
    """Mean, min and max of a*, the accuracy reached, the frozen layer's and the adapter's contribution, and the
    share of tasks where the adapter adds more than :data:`CONTRIBUTION_MARGIN`."""
    rows = [
        [label, *(format_number(tasks[column].agg(how)) for how in ("mean", "min", "max"))]
        for label, column in (("a* (reference)", "reference"), ("accuracy reached", "accuracy"),
                              ("frozen layer, same head", "base_accuracy"), ("adapter contribution", "contribution"))
    ]  # fmt: skip
    adds = int((tasks["contribution"] > CONTRIBUTION_MARGIN).sum())
    trained = f"trained alone for {steps} decision steps" if steps else "trained alone"
    note = (
        f"{len(tasks)} tasks, each {trained}; held-out accuracy. The adapter adds more than {CONTRIBUTION_MARGIN:g} "
        f"accuracy on {adds} of {len(tasks)} tasks ({format_number(100 * adds / len(tasks))}%).\n\n"
    )
    return note + markdown_table(["", "mean", "min", "max"], rows)


def retrieval_part(directory: str | Path, resamples: int = 2000, seed: int = 0) -> RetrievalPart | None:
    """The tables and figures of ``DIR/retrieval``, or None when it has no results (``resamples``, ``seed``: the
    bootstrap)."""
    retrieval = load_retrieval(directory)
    if retrieval is None:
        return None
    part = RetrievalPart()
    precision = precision_at_1(retrieval.queries, resamples, seed)
    part.tables["retrieval_precision"] = precision, precision_markdown(precision)
    part.figures["retrieval_precision"] = precision_figure(precision)
    curves = threshold_curves(retrieval.queries)
    part.tables["threshold_sensitivity"] = curves, threshold_markdown(curves)
    part.figures["threshold_sensitivity"] = threshold_figure(curves)
    contribution = retrieval.tasks[list(TASK_COLUMNS)]
    part.tables["adapter_contribution"] = (
        contribution,
        contribution_markdown(contribution, retrieval.config.get("steps")),
    )
    return part
