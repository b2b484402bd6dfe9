"""The paper's headline figures beside ours, one row per claim, each with how ours is measured.

Claims about a specific rule name it (similarity, fresh, keep); the memoryless heuristics
and the learned controllers are the agents that declare ``memoryless`` or ``needs_training``
(:mod:`analysis.capabilities`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.capabilities import agents_with
from analysis.format import format_number, format_times, safe_ratio
from analysis.results import (
    CAPABILITY_COLUMNS,
    METRICS,
    STRATUM_COLUMNS,
    checked,
    runs_of,
    stratum_columns,
    with_strata,
)

__all__ = ["SETTINGS", "paper_vs_ours", "paper_vs_ours_by_setting"]


def _shared_means(runs: pd.DataFrame, metric: str, agents: list[str]) -> dict[str, float] | None:
    """Each agent's mean ``metric`` over the strata where all ``agents`` have a value; None if one has none."""
    valid = runs[runs["agent"].isin(agents)].dropna(subset=[metric])
    per_stratum = valid.groupby("stratum")["agent"].nunique()
    shared = valid[valid["stratum"].isin(per_stratum.index[per_stratum == len(agents)])]
    if shared.empty:
        return None
    return shared.groupby("agent")[metric].mean().to_dict()


def _with_similarity(runs: pd.DataFrame, metric: str, memoryless: list[str]) -> dict[str, dict[str, float]]:
    """Per memoryless heuristic, its and similarity's mean ``metric`` over the strata where both ran."""
    pairs = {agent: _shared_means(runs, metric, ["similarity", agent]) for agent in memoryless}
    return {agent: means for agent, means in pairs.items() if means is not None}


def _bwt_claim(frame: pd.DataFrame, runs: pd.DataFrame) -> tuple:
    """The BWT row: the memoryless heuristics' mean abs(BWT) over similarity's.

    Each heuristic is compared with similarity over the strata where both ran. Only strata
    with shared heads count when they hold such a pair: with a head per task almost
    nothing can be forgotten (measured BWT 0, or +0.002 with evictions).
    """
    claim, paper, paper_value = "closer to zero BWT than memoryless", "about 9x", 9.0
    memoryless = agents_with(frame, "memoryless")
    shared_heads = set(frame.loc[frame["heads"] == "slot", "stratum"]) if "heads" in frame else set()
    pairs = _with_similarity(runs[runs["stratum"].isin(shared_heads)], "bwt", memoryless)
    where = ", shared heads (heads=slot) only"
    if not pairs:
        pairs, where = _with_similarity(runs, "bwt", memoryless), ""
    how = (
        f"mean over the memoryless heuristics ({', '.join(memoryless) or 'none ran'}) of abs(BWT), / abs(BWT) of "
        "similarity, each over the strata where it and similarity ran" + where
    )
    if not pairs:
        return claim, paper, paper_value, math.nan, "not run (needs similarity and a memoryless heuristic)", how
    similarity = float(np.mean([means["similarity"] for means in pairs.values()]))
    ratio = safe_ratio(float(np.mean([abs(means[agent]) for agent, means in pairs.items()])), abs(similarity))
    detail = ", ".join(
        [f"similarity {format_number(similarity)}", *(f"{a} {format_number(m[a])}" for a, m in pairs.items())]
    )
    return claim, paper, paper_value, ratio, f"{format_times(ratio)}: BWT {detail}", how


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
    if "protect" in keep:  # the claim is about distillation: strata under another protection rule stay out
        keep = keep[keep["protect"] == "distill"]
    columns = [c for c in stratum_columns(frame) if c != "distill_weight"]
    per_stratum = runs[runs["agent"] == "keep"].groupby("stratum")["bwt"].mean()
    strata = keep.drop_duplicates("stratum").assign(bwt=lambda f: f["stratum"].map(per_stratum))
    without = strata[strata["distill_weight"] == 0]
    with_ = strata[strata["distill_weight"] > 0]
    pairs = without.merge(with_, on=columns, suffixes=("_without", "_with")).dropna(subset=["bwt_without", "bwt_with"])
    if pairs.empty:
        return not_run
    before, after = pairs["bwt_without"].mean(), pairs["bwt_with"].mean()
    ratio = safe_ratio(abs(before), abs(after))
    return (
        claim,
        "claimed, no figure",
        math.nan,
        ratio,
        f"{format_times(ratio)}: BWT of keep {format_number(before)} -> {format_number(after)}",
        how,
    )


def paper_vs_ours(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's headline figures beside ours, one row per claim.

    Columns: ``claim``, ``paper``, ``ours`` (text with the numbers behind it), ``paper_value``,
    ``ours_value`` (NaN when not run; inf when a ratio divides by an exact zero) and
    ``measured_as``. Ratios compare agents over the strata where both have a value. The
    paper's RL recovery figure gets a row per learned controller that ran, or one "not run" row.
    """
    required = ["agent", "seed", *STRATUM_COLUMNS, *CAPABILITY_COLUMNS, *METRICS]
    frame = with_strata(checked(summary, required, "summary"))
    runs = runs_of(frame, METRICS)
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
        ratio = safe_ratio(means["fresh"], means["similarity"])
        detail = f"fresh {format_number(means['fresh'])} / similarity {format_number(means['similarity'])} steps"
        add("bank cuts cyclic recovery time", "10x", 10.0, ratio, f"{format_times(ratio)}: {detail}", how)
    learned = agents_with(frame, "needs_training")
    for agent, paper_text, paper_value in (("similarity", "0", 0.0), *((a, "1.8", 1.8) for a in learned)):
        means = _shared_means(runs, "mean_recovery_steps", [agent])
        value = math.nan if means is None else means[agent]
        ours = "not run" if means is None else f"{format_number(value)} steps"
        claim = f"recovery steps, {agent}" + ("" if agent == "similarity" else " (paper: RL)")
        add(claim, paper_text, paper_value, value, ours, f"{agent}'s mean recovery steps over returning visits")
    if not learned:
        how = "mean recovery steps over returning visits of each agent that needs training"
        add("recovery steps, RL (paper: RL)", "1.8", 1.8, math.nan, "not run (needs a learned controller)", how)
    add(*_bwt_claim(frame, runs))
    add(*_distillation_claim(frame, runs))
    means = _shared_means(runs, "bytes_per_task", ["similarity"])
    value = math.nan if means is None else means["similarity"] / 1e6
    ours = "not run" if means is None else f"{value:.3g} MB"
    add("bank memory per task", "0.29 MB", 0.29, value, ours, "similarity's bank bytes per task / 10^6")
    return pd.DataFrame(rows)


SETTINGS = ("idealised", "default")
"""The scenarios whose claims get a column each: the paper's idealised setting and the honest default."""


def paper_vs_ours_by_setting(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`paper_vs_ours` for each setting of :data:`SETTINGS` that the summary ran, side by side.

    One row per claim: ``claim``, ``paper``, ``paper_value``, ``measured_as``, and per setting
    ``ours (<setting>)`` and ``ours_value (<setting>)``. A summary with neither setting gets one
    ``ours (all strata)`` column over everything it holds.
    """
    present = [name for name in SETTINGS if (summary["scenario"] == name).any()]
    parts = {name: paper_vs_ours(summary[summary["scenario"] == name]) for name in present}
    if not parts:
        parts = {"all strata": paper_vs_ours(summary)}
    claims = pd.concat([part[["claim", "paper", "paper_value", "measured_as"]] for part in parts.values()])
    table = claims.drop_duplicates("claim").reset_index(drop=True)
    for name, part in parts.items():
        values = part.set_index("claim")
        table[f"ours ({name})"] = table["claim"].map(values["ours"]).fillna("not run")
        table[f"ours_value ({name})"] = table["claim"].map(values["ours_value"])
    return table
