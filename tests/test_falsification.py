"""analysis.falsification on SYNTHETIC summaries whose verdict is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.falsification import challengers, falsification_markdown, falsification_table, verdicts
from analysis.results import CAPABILITY_COLUMNS, STRATUM_COLUMNS

DECLARED = {"oracle": "reads_hidden", "fresh": "memoryless", "maskable_ppo": "needs_training"}


def summary(regrets: dict[str, list[float]], scenario: str = "synthetic") -> pd.DataFrame:
    """A SYNTHETIC summary: one run per (agent, seed) with the given cumulative regrets, seed i at index i."""
    rows = [
        {"agent": agent, "seed": seed, "cumulative_regret": regret, "scenario": scenario}
        | {column: 1 for column in STRATUM_COLUMNS[1:]}
        | {capability: DECLARED.get(agent) == capability for capability in CAPABILITY_COLUMNS}
        for agent, values in regrets.items()
        for seed, regret in enumerate(values)
    ]
    return pd.DataFrame(rows)


SPREAD = [10.0, 30.0, 50.0, 70.0, 90.0, 110.0]  # a large difference between seeds (streams of unequal difficulty)


def test_challengers_are_the_memory_using_agents_that_read_nothing_hidden():
    frame = summary({name: [1.0] for name in ("similarity", "oracle", "fresh", "probe", "maskable_ppo")})
    assert challengers(frame) == ["probe", "maskable_ppo"]


def test_a_small_improvement_on_every_seed_clearly_beats_because_runs_are_paired():
    # The challenger pays 2 less on every seed: far inside the spread between seeds, which an unpaired
    # comparison of the two means could not resolve, but the paired difference is 2 on every seed.
    frame = summary({"similarity": SPREAD, "probe": [v - 2 for v in SPREAD], "oracle": [v - 5 for v in SPREAD]})
    row = falsification_table(frame, resamples=500).iloc[0]
    assert (row.challenger, row.n_seeds) == ("probe", 6)
    assert row.difference == pytest.approx(2.0) and row.difference_low == pytest.approx(2.0)
    assert row.clearly_beats and not row.clearly_worse
    verdict = verdicts(falsification_table(frame, resamples=500), frame, resamples=500).iloc[0]
    assert verdict.verdict.startswith("beaten by probe")
    assert verdict.reference_regret == pytest.approx(np.mean(SPREAD) - 5)


def test_noise_around_the_rule_is_a_match_and_a_worse_challenger_is_clearly_worse():
    noise = [3.0, -3.0, 2.0, -2.0, 1.0, -1.0]
    frame = summary({
        "similarity": SPREAD, "probe": [v + e for v, e in zip(SPREAD, noise, strict=True)],
        "maskable_ppo": [v + 4 for v in SPREAD],
    })  # fmt: skip
    table = falsification_table(frame, resamples=500).set_index("challenger")
    assert table.loc["probe", "difference_low"] < 0 < table.loc["probe", "difference_high"]
    assert not table.loc["probe", "clearly_beats"] and not table.loc["probe", "clearly_worse"]
    assert table.loc["maskable_ppo", "clearly_worse"]
    verdict = verdicts(table.reset_index(), frame, resamples=500).iloc[0]
    assert verdict.best_challenger == "probe" and verdict.verdict.startswith("holds: matched")
    assert np.isnan(verdict.reference_regret)  # no oracle in this sweep


def test_only_seeds_both_ran_are_paired_and_strata_are_kept_apart():
    frame = pd.concat([
        summary({"similarity": [5.0, 6.0, 7.0, 8.0, 9.0, 10.0], "probe": [4.0, 5.0, 6.0, 7.0, 8.0]}, scenario="traps"),
        summary({"similarity": [1.0] * 5, "probe": [9.0] * 5}, scenario="default"),
        summary({"similarity": [1.0, 1.0], "probe": [9.0, 9.0]}, scenario="pairs"),
        summary({"similarity": [1.0] * 5, "probe": [1.0] * 5, "maskable_ppo": [0.0, 0.0]}, scenario="mixed"),
    ])  # fmt: skip
    table = falsification_table(frame, resamples=200).set_index("stratum")
    assert table.loc["traps", "n_seeds"] == 5 and table.loc["traps", "similarity_regret"] == pytest.approx(7.0)
    assert table.loc["default", "clearly_worse"] and table.loc["traps", "clearly_beats"]
    assert table.loc["pairs", "clearly_worse"]  # the interval says so, but two seeds get no verdict
    verdict = verdicts(table.reset_index(), frame, resamples=200)
    assert verdict.set_index("stratum").loc["pairs", "verdict"] == "no verdict: 2 paired seeds, a verdict needs 5"
    assert table.loc["mixed"].set_index("challenger").loc["maskable_ppo", "clearly_beats"]  # on 2 seeds only:
    assert verdict.set_index("stratum").loc["mixed", "verdict"].startswith("holds: matched")  # shown, not judged
    text = falsification_markdown(table.reset_index(), verdict)
    assert "| traps | 5 |" in text and "beaten by probe" in text and "holds: every challenger clearly worse" in text


def test_no_rule_or_no_challenger_gives_an_empty_table():
    assert falsification_table(summary({"probe": [1.0], "oracle": [1.0]})).empty
    assert falsification_table(summary({"similarity": [1.0], "fresh": [2.0]})).empty
