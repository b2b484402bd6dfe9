"""The paper's falsification test, one row per stream: does a learned or feedback controller clearly beat similarity?

The paper's claim is that a simple input-similarity rule matches or beats a learned
controller; it names what would refute it: a learned policy that clearly beats similarity on
the same bank. Here, per stratum (one stream with its overrides) that holds runs of the
paper's rule (:data:`PAPER_RULE`), every *challenger* is compared with it seed by seed: an
agent that uses the memory and reads nothing hidden (neither ``reads_hidden`` nor
``memoryless``), so a learned controller or a feedback rule such as ``probe``.

- the paired difference of cumulative regret, similarity minus challenger, per seed (the
  same seed is the same task stream and the same probe draws), averaged over episodes; its
  mean with a 95% percentile-bootstrap interval over seeds (:func:`analysis.stats.stratified_bootstrap`);
  positive means the challenger pays less regret;
- the probability that a challenger's run has lower regret than a run of the rule (rliable's
  probability of improvement, each side's runs resampled on their own);
- "clearly beats" means the interval of the paired difference lies above 0, "clearly worse"
  that it lies below 0; a verdict needs :data:`MIN_SEEDS` paired seeds.

The stream's row names the best challenger (largest mean difference) and the verdict; the
reference (the oracle, ``reads_hidden``) is shown beside it as what a perfect recall would pay.
"""

from __future__ import annotations

import pandas as pd

from analysis.capabilities import agent_order, capabilities, reference_agent
from analysis.format import format_number
from analysis.results import STRATUM_COLUMNS, checked, runs_of, stratum_order, with_strata
from analysis.stats import mean, probability_of_improvement, stratified_bootstrap
from analysis.tables import markdown_table

__all__ = [
    "PAPER_RULE", "challengers", "contenders_markdown", "falsification_markdown", "falsification_table", "verdicts",
]  # fmt: skip

PAPER_RULE = "similarity"
"""The paper's allocation rule, which the challengers are compared with."""
MIN_SEEDS = 5
"""Fewer paired seeds give intervals too coarse to call (with 2, a percentile interval is little more than
the range of the two differences): such a stream gets its numbers and no verdict."""


def challengers(summary: pd.DataFrame) -> list[str]:
    """The agents compared with the paper's rule: they use the memory and read nothing hidden."""
    table = capabilities(summary)
    return [
        agent
        for agent in agent_order(summary)
        if agent != PAPER_RULE and not table.loc[agent, "reads_hidden"] and not table.loc[agent, "memoryless"]
    ]


COLUMNS = [
    "stratum", "challenger", "n_seeds", "similarity_regret", "challenger_regret", "difference", "difference_low",
    "difference_high", "p_improvement", "p_low", "p_high", "clearly_beats", "clearly_worse",
]  # fmt: skip


def _interval(values, resamples: int, seed: int) -> tuple[float, float, float]:
    return tuple(float(v) for v in stratified_bootstrap([values], mean, resamples, seed=seed))


def falsification_table(summary: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (stratum, challenger) with the paired regret difference and the probability of improvement.

    Columns: ``stratum``, ``challenger``, ``n_seeds`` (seeds both ran), ``similarity_regret``,
    ``challenger_regret`` (means over those seeds), ``difference``, ``difference_low``,
    ``difference_high``, ``p_improvement``, ``p_low``, ``p_high``, ``clearly_beats``,
    ``clearly_worse``. Strata without runs of the paper's rule, or without a challenger, have no row.
    """
    frame = with_strata(checked(summary, ["agent", "seed", "cumulative_regret", *STRATUM_COLUMNS], "summary"))
    runs = runs_of(frame, ["cumulative_regret"])
    rows = []
    for stratum in stratum_order(frame):
        here = runs[runs["stratum"] == stratum]
        rule = here[here["agent"] == PAPER_RULE].set_index("seed")["cumulative_regret"]
        if rule.empty:
            continue
        for challenger in challengers(frame):
            theirs = here[here["agent"] == challenger].set_index("seed")["cumulative_regret"]
            paired = pd.concat([rule, theirs], axis=1, keys=["rule", "challenger"], join="inner").dropna()
            if paired.empty:
                continue
            difference = _interval(paired["rule"] - paired["challenger"], resamples, seed)
            p = probability_of_improvement(-paired["challenger"], -paired["rule"], resamples, seed=seed)
            rows.append({
                "stratum": stratum,
                "challenger": challenger,
                "n_seeds": len(paired),
                "similarity_regret": float(paired["rule"].mean()),
                "challenger_regret": float(paired["challenger"].mean()),
                "difference": difference[0],
                "difference_low": difference[1],
                "difference_high": difference[2],
                "p_improvement": p[0],
                "p_low": p[1],
                "p_high": p[2],
                "clearly_beats": difference[1] > 0,
                "clearly_worse": difference[2] < 0,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _verdict(rows: pd.DataFrame) -> str:
    if (seeds := int(rows["n_seeds"].max())) < MIN_SEEDS:
        return f"no verdict: {seeds} paired seeds, a verdict needs {MIN_SEEDS}"
    rows = rows[rows["n_seeds"] >= MIN_SEEDS]  # a challenger with fewer seeds is shown, not judged
    beaten = rows[rows["clearly_beats"]]
    if len(beaten):
        return f"beaten by {', '.join(beaten['challenger'])}: the paper's claim fails here"
    if rows["clearly_worse"].all():
        return "holds: every challenger clearly worse"
    return "holds: matched (no challenger's interval excludes 0)"


def verdicts(table: pd.DataFrame, summary: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per stratum of ``table`` (:func:`falsification_table`): the best challenger and the verdict.

    Columns: ``stratum``, ``n_seeds``, ``reference`` and ``reference_regret`` (the oracle's mean
    regret over the stratum's seeds, NaN without one), ``best_challenger``, ``difference`` and its
    interval, ``p_improvement``, and ``verdict``.
    """
    reference = reference_agent(summary)
    runs = runs_of(with_strata(summary), ["cumulative_regret"])
    rows = []
    for stratum, group in table.groupby("stratum", sort=False):
        best = group.loc[group["difference"].idxmax()]
        oracle = runs[(runs["stratum"] == stratum) & (runs["agent"] == reference)]["cumulative_regret"]
        rows.append({
            "stratum": stratum,
            "n_seeds": int(group["n_seeds"].max()),
            "similarity_regret": float(best["similarity_regret"]),
            "reference": reference,
            "reference_regret": float(oracle.mean()) if len(oracle) else float("nan"),
            "best_challenger": best["challenger"],
            "challenger_regret": float(best["challenger_regret"]),
            "difference": float(best["difference"]),
            "difference_low": float(best["difference_low"]),
            "difference_high": float(best["difference_high"]),
            "p_improvement": float(best["p_improvement"]),
            "verdict": _verdict(group),
        })  # fmt: skip
    return pd.DataFrame(rows)


CONTENDER_METRICS = {
    "cumulative_regret": "regret",
    "mean_recovery_steps": "recovery steps",
    "retrieval_precision": "retrieval precision",
    "acc": "ACC",
    "bwt": "BWT",
}


def contenders_markdown(metrics: pd.DataFrame, summary: pd.DataFrame, strata: list[str]) -> str:
    """Per stream of ``strata``: the rule, the reference and every challenger, ``mean [95% CI]`` of each of
    :data:`CONTENDER_METRICS`, from a per-stratum metric table (:func:`analysis.tables.metric_table` with
    ``by_stratum=True``)."""
    shown = [PAPER_RULE, reference_agent(summary), *challengers(summary)]
    rows = []
    for stratum in strata:
        here = metrics[metrics["stratum"] == stratum].set_index(["agent", "metric"])
        for agent in dict.fromkeys(here.index.get_level_values("agent")):
            if agent not in shown:
                continue
            cells = [here.loc[(agent, metric)] for metric in CONTENDER_METRICS]
            rows.append([stratum, agent, *(
                f"{format_number(r['mean'])} [{format_number(r['ci_low'])}, {format_number(r['ci_high'])}]"
                if pd.notna(r["mean"]) else "n/a"
                for r in cells
            )])  # fmt: skip
    return markdown_table(["stream", "agent", *CONTENDER_METRICS.values()], rows)


def falsification_markdown(table: pd.DataFrame, verdict: pd.DataFrame, contenders: str = "") -> str:
    """The per-stream verdicts, then every challenger's paired comparison, then ``contenders``
    (:func:`contenders_markdown`: each contender's metrics with intervals) if given."""

    def interval(value, low, high) -> str:
        return f"{format_number(value)} [{format_number(low)}, {format_number(high)}]"

    head = ["stream", "seeds", "similarity regret", "oracle regret", "best challenger", "its regret",
            "similarity − challenger [95% CI]", "P(challenger better)", "verdict"]  # fmt: skip
    rows = [
        [r.stratum, str(r.n_seeds), format_number(r.similarity_regret), format_number(r.reference_regret),
         r.best_challenger, format_number(r.challenger_regret),
         interval(r.difference, r.difference_low, r.difference_high), format_number(r.p_improvement), r.verdict]
        for r in verdict.itertuples()
    ]  # fmt: skip
    detail_head = ["stream", "challenger", "seeds", "similarity − challenger [95% CI]", "P(challenger better) [95% CI]"]
    detail = [
        [r.stratum, r.challenger, str(r.n_seeds), interval(r.difference, r.difference_low, r.difference_high),
         interval(r.p_improvement, r.p_low, r.p_high)]
        for r in table.itertuples()
    ]  # fmt: skip
    note = (
        "Cumulative regret, paired by seed (the same stream and probe draws): a positive difference means the "
        "challenger paid less. A challenger clearly beats the paper's similarity rule when the interval of the "
        "difference lies above 0.\n\n"
    )
    tables = [markdown_table(head, rows), markdown_table(detail_head, detail)]
    if contenders:
        tables.append("Mean over seeds [95% CI] of the contenders on each stream:\n\n" + contenders)
    return note + "\n".join(tables)
