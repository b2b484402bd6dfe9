"""The report of a sweep's results directory: tables with confidence intervals, figures, paper vs ours.

``nsr report DIR`` calls :func:`write_report`, which reads what ``nsr sweep`` wrote into DIR
(:mod:`analysis.results`) and writes into ``DIR/report``:

- ``metrics.{md,csv}``: per agent, for recovery steps, cumulative regret, ACC, BWT,
  forgetting, bytes per task and retrieval precision, the mean and the interquartile mean,
  each with a 95% stratified-bootstrap confidence interval over seeds (a stratum is one
  scenario with its overrides; see :mod:`analysis.stats`); ``metrics_by_stratum.{md,csv}``
  the same per stratum when there are several (:mod:`analysis.tables`);
- ``theorem1.{md,csv}`` and ``theorem1.{png,pdf}``: cumulative regret in excess of the
  reference agent's (the oracle, which reads the hidden task labels) against the number of
  returning visits, one least-squares line per agent, beside the measured Delta_switch
  (:mod:`analysis.theorem1`);
- ``falsification.{md,csv}``: the paper's falsification test per stream: whether a learned or
  feedback controller clearly beats the similarity rule (the interval of the paired regret
  difference excludes 0), with ``falsification_pairs.csv`` for every challenger
  (:mod:`analysis.falsification`);
- ``mechanisms.{md,csv}`` and ``mechanisms.{png,pdf}``: when the results hold several memory designs
  (``memory`` and ``protect``), one table of them per stream and agent, and their regret
  (:mod:`analysis.mechanisms`);
- ``paper_vs_ours.{md,csv}``: the paper's headline figures beside ours, one column for the
  idealised setting and one for the honest default where the sweep ran them (:mod:`analysis.claims`);
- figures ``regret_curves``, ``recovery_steps``, ``accuracy_matrices``, ``allocation`` (PNG and
  PDF, :mod:`analysis.figures`);
- when ``nsr retrieval --out DIR`` has written ``DIR/retrieval``: ``retrieval_precision`` and
  ``threshold_sensitivity`` (tables and figures) and ``adapter_contribution`` (table), from
  :mod:`analysis.retrieval_report`; without it they are left out (no "Skipped" line);
- ``report.md``, an index with every table inline and every figure linked.

Every file is written to a hidden temporary name and renamed, so a killed report never
leaves a half-written file (``nsr_env.atomic``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.capabilities import reference_agent
from analysis.claims import paper_vs_ours_by_setting
from analysis.falsification import contenders_markdown, falsification_markdown, falsification_table, verdicts
from analysis.figures import (
    accuracy_matrices_figure,
    allocation_figure,
    recovery_figure,
    regret_curves,
    regret_curves_figure,
    theorem1_figure,
)
from analysis.format import format_number
from analysis.mechanisms import mechanisms_figure, mechanisms_markdown, mechanisms_table
from analysis.results import load_results, stratum_order
from analysis.retrieval_report import RETRIEVAL_NAMES, retrieval_part
from analysis.tables import markdown_table, metric_table, metrics_markdown
from analysis.theorem1 import excess_regret, theorem1_fit
from nsr_env.atomic import atomic_write

__all__ = ["Report", "write_report"]


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
    Parts that the results cannot support (no reference agent for Theorem 1, a single number of
    returning visits, no returning visits at all) are skipped and listed in ``skipped``.
    """
    results = load_results(directory)
    summary, out = results.summary, results.directory / "report"
    out.mkdir(exist_ok=True)
    report = Report(out)
    strata = stratum_order(summary)
    table = metric_table(summary, resamples=resamples, seed=seed)
    report.tables += _write_table(table, metrics_markdown(table, by_stratum=False), out / "metrics")
    comparisons = falsification_table(summary, resamples, seed)
    needed = len(strata) > 1 or not comparisons.empty
    by_stratum = metric_table(summary, by_stratum=True, resamples=resamples, seed=seed) if needed else None
    if len(strata) > 1:
        report.tables += _write_table(by_stratum, metrics_markdown(by_stratum, True), out / "metrics_by_stratum")
    else:
        _remove(out / "metrics_by_stratum", (".md", ".csv"))
    designs = mechanisms_table(by_stratum, summary) if by_stratum is not None else None
    if designs is None:
        _remove(out / "mechanisms", (".md", ".csv", ".png", ".pdf"))
    else:
        report.tables += _write_table(designs, mechanisms_markdown(designs), out / "mechanisms")
    if comparisons.empty:
        _remove(out / "falsification", (".md", ".csv"))
        (out / "falsification_pairs.csv").unlink(missing_ok=True)
        report.skipped.append(
            "falsification table: no stratum holds runs of both the similarity rule and a challenger "
            "(an agent that uses the memory and reads nothing hidden, e.g. probe or maskable_ppo)"
        )
    else:
        verdict = verdicts(comparisons, summary, resamples, seed)
        contenders = contenders_markdown(by_stratum, summary, list(verdict["stratum"]))
        markdown = falsification_markdown(comparisons, verdict, contenders)
        report.tables += _write_table(verdict, markdown, out / "falsification")
        pairs = out / "falsification_pairs.csv"
        atomic_write(pairs, lambda temporary: comparisons.to_csv(temporary, index=False))
        report.tables.append(pairs)
    paper = paper_vs_ours_by_setting(summary)
    ours = [column for column in paper if column.startswith("ours (")]
    report.paper_vs_ours = markdown_table(
        ["claim", "paper", *ours, "measured as"], paper[["claim", "paper", *ours, "measured_as"]].values.tolist()
    )
    report.tables += _write_table(paper, report.paper_vs_ours, out / "paper_vs_ours")
    paper_md = report.tables[-2]
    figures: dict[str, Figure | None] = {
        "regret_curves": regret_curves_figure(regret_curves(results, resamples, seed), strata),
        "recovery_steps": recovery_figure(table, summary),
        "accuracy_matrices": accuracy_matrices_figure(results),
        "allocation": allocation_figure(results),
    }
    if designs is not None:
        figures["mechanisms"] = mechanisms_figure(designs)
    retrieval = retrieval_part(results.directory, resamples, seed)
    if retrieval is None:
        for name in RETRIEVAL_NAMES:
            _remove(out / name, (".md", ".csv", ".png", ".pdf"))
    else:
        for name, (frame, markdown) in retrieval.tables.items():
            report.tables += _write_table(frame, markdown, out / name)
        figures |= retrieval.figures
    if reference_agent(summary) is None:
        report.skipped.append(
            "Theorem 1 table and figure: no runs of an agent that reads the hidden task labels (reads_hidden) "
            "to measure excess regret against"
        )
    elif excess_regret(summary)["returning_visits"].nunique() < 2:
        report.skipped.append("Theorem 1 table and figure: the runs have fewer than two numbers of returning visits")
    else:
        fit = theorem1_fit(summary)
        rows = [
            [r.series, format_number(r.slope), format_number(r.intercept), format_number(r.r2), str(r.n_points)]
            for r in fit.itertuples()
        ]
        delta, source = format_number(fit["delta_switch"].iloc[0]), fit["delta_switch_source"].iloc[0]
        note = f"Measured Δ_switch = {delta} ({source}).\n\n"
        markdown = note + markdown_table(["series", "slope", "intercept", "R²", "points"], rows)
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
