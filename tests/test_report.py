"""analysis.stats and the report's modules on hand-worked values, properties, and SYNTHETIC results directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rliable import metrics as rliable_metrics
from scipy.stats import trim_mean

from analysis.capabilities import agent_order, colours, reference_agent
from analysis.claims import paper_vs_ours
from analysis.cli import main
from analysis.figures import regret_curves
from analysis.mechanisms import mechanisms_markdown, mechanisms_table
from analysis.metrics import average_accuracy, backward_transfer, forgetting
from analysis.report import write_report
from analysis.results import CAPABILITY_COLUMNS, SWEEP_HINT, load_results
from analysis.stats import iqm, mean, probability_of_improvement, stratified_bootstrap
from analysis.tables import metric_table
from analysis.theorem1 import excess_regret, theorem1_fit

# --- a SYNTHETIC results directory in the format `nsr sweep` writes ----------------------------

PHASE_LENGTH = 4
LEARN = np.array([0.4, 0.3, 0.2, 0.1])  # regret of learning a task from scratch: Delta_switch = 1.0
BYTES = 35_863
# On a returning visit: fraction of LEARN paid again, recovery steps, accuracy kept by tasks not trained.
BEHAVIOUR = {
    "similarity": (0.0, 0, 0.88),
    "oracle": (0.0, 0, 0.88),
    "fresh": (1.0, 3, 0.60),
    "keep": (0.3, 1, 0.80),
    "ppo": (0.1, 2, 0.85),
}
CAPABILITIES = {
    "oracle": {"reads_hidden"},
    "similarity": set(),
    "fresh": {"memoryless"},
    "keep": {"memoryless"},
    "round_robin": {"memoryless"},
    "random": {"memoryless"},
    "ppo": {"needs_training"},
    "maskable_ppo": {"needs_training"},
}
"""What the real agents declare, as `nsr sweep` records it in summary.csv."""
GRID = [(m, t) for m in (2, 3) for t in (1, 2, 4)]  # (tasks_per_cycle, cycles), one slot
SEEDS = (0, 1, 2)


def with_capabilities(summary: pd.DataFrame, capabilities: dict[str, set[str]] = CAPABILITIES) -> pd.DataFrame:
    """``summary`` with a boolean column per capability, from each row's agent."""
    return summary.assign(**{c: summary["agent"].map(lambda a, c=c: c in capabilities[a]) for c in CAPABILITY_COLUMNS})


def synthetic_run(agent: str, m: int, t: int, seed: int, slots: int = 1) -> tuple[dict, list[dict], dict]:
    """One SYNTHETIC run: its summary row, its step rows and its accuracy matrix, consistent with each other."""
    relearn, recovery, kept = BEHAVIOUR[agent]
    rng = np.random.default_rng([seed, m, t, list(BEHAVIOUR).index(agent)])
    cell = f"{agent}-m{m}-t{t}-s{seed}"
    tasks = [phase % m for phase in range(m * t)]
    steps, R, first_visits, recoveries, trained, bank = [], [], [], [], set(), []
    for phase, task in enumerate(tasks):
        returning = task in trained
        scale = relearn if returning else 1.0 + 0.05 * rng.standard_normal()
        regret = scale * LEARN + rng.uniform(0, 0.01, PHASE_LENGTH)
        recovered_at = recovery if returning else 3
        if returning:
            recoveries.append(recovery)
        else:
            first_visits.append(regret.sum())
        recall = 2 + bank.index(task) if returning and relearn == 0 else (1 if agent == "keep" else 0)
        for k in range(PHASE_LENGTH):
            if k == PHASE_LENGTH - 1 and task not in bank:
                bank.append(task)
            steps.append(
                {"cell": cell, "scenario": "synthetic", "agent": agent, "seed": seed, "episode": 0,
                 "step": phase * PHASE_LENGTH + k, "task": task, "phase": phase, "slot": phase % slots,
                 "recall": recall if k == 0 else 1, "accuracy": 0.9 - regret[k], "regret": regret[k],
                 "recovery_steps": recovered_at if k >= recovered_at else -1, "task_boundary": k == 0,
                 "bank_size": len(bank), "bank_bytes": len(bank) * BYTES, "tasks_per_cycle": m, "cycles": t,
                 "slots": slots, "rank": 4, "bank_capacity": 10}
            )  # fmt: skip
        trained.add(task)
        R.append([0.9 if j == task else kept if j in trained else 0.5 for j in range(m)])
    summary = {
        "cell": cell, "scenario": "synthetic", "agent": agent, "seed": seed, "episode": 0, "tasks_per_cycle": m,
        "cycles": t, "phase_length": PHASE_LENGTH, "slots": slots, "rank": 4, "bank_capacity": 10,
        "returning_visits": (t - 1) * m, "cumulative_regret": sum(s["regret"] for s in steps),
        "mean_recovery_steps": np.mean(recoveries) if recoveries else math.nan, "censored_visits": 0,
        "acc": average_accuracy(R, tasks), "bwt": backward_transfer(R, tasks), "forgetting": forgetting(R, tasks),
        "bytes_per_task": BYTES, "retrieval_precision": 1.0 if recoveries and relearn == 0 else math.nan,
        "first_visit_regret": np.mean(first_visits),
    }  # fmt: skip
    return summary, steps, {cell: [{"episode": 0, "phase_tasks": tasks, "R": R}]}


def synthetic_results(
    root: Path, agents=("similarity", "oracle", "fresh", "keep"), grid=GRID, seeds=SEEDS, ppo_on=(3, 2)
) -> Path:
    """A SYNTHETIC results directory: ``agents`` x ``grid`` x ``seeds``, plus ppo on the stratum ``ppo_on`` only."""
    runs = [(a, m, t, s) for a in agents for m, t in grid for s in seeds]
    runs += [("ppo", *ppo_on, s) for s in seeds] if ppo_on else []
    summary, steps, matrices = [], [], {}
    for run in runs:
        row, rows, matrix = synthetic_run(*run)
        summary.append(row)
        steps += rows
        matrices |= matrix
    root.mkdir(parents=True, exist_ok=True)
    with_capabilities(pd.DataFrame(summary)).to_csv(root / "summary.csv", index=False)
    pd.DataFrame(steps).to_csv(root / "steps.csv", index=False)
    (root / "matrices.json").write_text(json.dumps(matrices))
    return root


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return synthetic_results(tmp_path_factory.mktemp("synthetic") / "results")


@pytest.fixture(scope="module")
def summary(results_dir) -> pd.DataFrame:
    return pd.read_csv(results_dir / "summary.csv")


@pytest.fixture(scope="module")
def written(results_dir):
    return write_report(results_dir, resamples=200)


# --- statistics ---------------------------------------------------------------------------------


def test_iqm_by_hand():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6; the mean is 16
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # 5 // 4 = 1 dropped at each end
    assert iqm([5, 1, 3]) == pytest.approx(3.0)  # fewer than 4 values: the plain mean
    assert iqm([[1, 10], [2, 20], [3, 30], [400, 4000]], axis=0) == pytest.approx([2.5, 25])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 12, 13])
def test_iqm_is_scipys_quarter_trimmed_mean(n):
    values = np.random.default_rng(n).lognormal(size=n)
    assert iqm(values) == pytest.approx(trim_mean(values, 0.25))


def test_mean_and_iqm_along_an_axis_are_rliables_per_column():
    values = np.random.default_rng(4).lognormal(size=(9, 5))
    for ours, theirs in ((mean, rliable_metrics.aggregate_mean), (iqm, rliable_metrics.aggregate_iqm)):
        np.testing.assert_allclose(ours(values, 0), [theirs(values[:, [j]]) for j in range(5)])
        np.testing.assert_allclose(ours(values.T, 1), ours(values, 0))


def test_a_stacked_statistic_gives_each_part_its_own_bootstrap():
    strata = [np.random.default_rng(5).normal(size=(6, 3)), np.random.default_rng(6).normal(size=(4, 3))]
    value, low, high = stratified_bootstrap(strata, lambda v, axis: np.stack([mean(v, axis), iqm(v, axis)]), seed=2)
    assert value.shape == low.shape == high.shape == (2, 3)
    for row, statistic in enumerate((mean, iqm)):  # the same seeds are drawn, so the intervals are the same
        alone = stratified_bootstrap(strata, statistic, seed=2)
        for stacked, single in zip((value, low, high), alone, strict=True):
            np.testing.assert_allclose(stacked[row], single)


def test_bootstrap_of_two_values_by_hand():
    # resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% quantiles are 0 and 1
    estimate, low, high = stratified_bootstrap([[0.0, 1.0]], resamples=2000, seed=0)
    assert (estimate, low, high) == (0.5, 0.0, 1.0)


def test_seeds_are_resampled_within_strata_only():
    # every stratified resample holds three 0s and three 1s, so its mean is always 0.5
    assert stratified_bootstrap([[0, 0, 0], [1, 1, 1]]) == (0.5, 0.5, 0.5)
    _, low, high = stratified_bootstrap([[0, 0, 0, 1, 1, 1]])  # one stratum: the mix varies
    assert low < 0.5 < high


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=8), min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_interval_contains_the_estimate(strata, seed):
    for statistic in (mean, iqm):
        estimate, low, high = stratified_bootstrap(strata, statistic, resamples=500, seed=seed)
        slack = 1e-9 * (1 + abs(estimate))
        assert low - slack <= estimate <= high + slack
        assert min(map(min, strata)) - slack <= low <= high <= max(map(max, strata)) + slack


def test_interval_narrows_with_more_seeds():
    values = np.random.default_rng(0).normal(size=(3, 80))
    width = {}
    for n in (5, 20, 80):
        _, low, high = stratified_bootstrap(values[:, :n])
        width[n] = high - low
    assert width[5] > width[20] > width[80] > 0


def test_bootstrap_is_deterministic_given_its_seed():
    strata = [np.random.default_rng(1).normal(size=6), [3.0, 4.0, 8.0]]
    assert stratified_bootstrap(strata, seed=7) == stratified_bootstrap(strata, seed=7)
    assert stratified_bootstrap(strata, seed=7)[1:] != stratified_bootstrap(strata, seed=8)[1:]


def test_vector_observations_get_pointwise_intervals():
    curves = np.random.default_rng(2).normal(size=(5, 3)).cumsum(axis=1)
    estimate, low, high = stratified_bootstrap([curves, curves[:2] + 1], seed=3)
    assert estimate.shape == low.shape == high.shape == (3,)
    pooled = np.concatenate([curves, curves[:2] + 1])
    np.testing.assert_allclose(estimate, pooled.mean(axis=0))
    assert (low <= estimate).all() and (estimate <= high).all() and (low >= pooled.min(axis=0)).all()
    assert (high <= pooled.max(axis=0)).all() and (high > low).all()


def test_probability_of_improvement_is_rliables_with_an_interval():
    better, worse = np.arange(5.0) + 10, np.arange(5.0)
    assert probability_of_improvement(better, worse) == (1.0, 1.0, 1.0)  # every run of one beats every run of the other
    estimate, low, high = probability_of_improvement([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], seed=1)
    assert estimate == pytest.approx(0.5) and low < 0.5 < high  # one above, one tied (counts half), one below
    with pytest.raises(ValueError, match="finite scores for at least one run on each side"):
        probability_of_improvement([], [1.0])


@pytest.mark.parametrize(
    ("strata", "message"),
    [([], "at least one stratum"), ([[1.0], []], "stratum 1 has no seeds"), ([[1.0, math.nan]], "NaN"),
     ([np.ones((2, 3)), np.ones((2, 4))], "shape")],
)  # fmt: skip
def test_bootstrap_rejects_bad_strata(strata, message):
    with pytest.raises(ValueError, match=message):
        stratified_bootstrap(strata)


# --- tables ---------------------------------------------------------------------------------------


def test_metric_table_pools_runs_with_stratified_intervals(summary):
    table = metric_table(summary, resamples=500).set_index(["agent", "metric"])
    fresh = summary[summary["agent"] == "fresh"]
    row = table.loc[("fresh", "cumulative_regret")]
    assert row["n_runs"] == len(GRID) * len(SEEDS)
    assert row["mean"] == pytest.approx(fresh["cumulative_regret"].mean())
    assert row["iqm"] == pytest.approx(trim_mean(fresh["cumulative_regret"], 0.25))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    assert row["iqm_low"] <= row["iqm"] <= row["iqm_high"]
    # recovery steps exist only where tasks return (T > 1): 4 strata x 3 seeds
    assert table.loc[("fresh", "mean_recovery_steps"), "n_runs"] == 12
    assert table.loc[("fresh", "mean_recovery_steps"), "mean"] == pytest.approx(3.0)
    never_recalls = table.loc[("fresh", "retrieval_precision")]
    assert never_recalls["n_runs"] == 0 and math.isnan(never_recalls["mean"])
    agents = table.index.get_level_values("agent")
    assert list(dict.fromkeys(agents)) == ["oracle", "similarity", "fresh", "keep", "ppo"]  # by capability, then name


def test_metric_table_by_stratum_bootstraps_each_stratum_alone(summary):
    table = metric_table(summary, by_stratum=True, resamples=500)
    assert set(table.loc[table["agent"] == "ppo", "stratum"]) == {"synthetic M=3 T=2"}
    assert table.groupby(["agent", "stratum"]).ngroups == 4 * len(GRID) + 1
    row = table[(table["agent"] == "keep") & (table["stratum"] == "synthetic M=2 T=4") & (table["metric"] == "acc")]
    expected = summary.query("agent == 'keep' and tasks_per_cycle == 2 and cycles == 4")["acc"].mean()
    assert row["mean"].item() == pytest.approx(expected)
    assert row["tasks_per_cycle"].item() == 2 and row["cycles"].item() == 4 and row["n_runs"].item() == 3


def test_metric_table_is_deterministic_given_the_seed(summary):
    first = metric_table(summary, resamples=300, seed=5)
    pd.testing.assert_frame_equal(first, metric_table(summary, resamples=300, seed=5))
    other = metric_table(summary, resamples=300, seed=6)
    assert not first["ci_low"].equals(other["ci_low"])
    pd.testing.assert_series_equal(first["mean"], other["mean"])


def hand_summary(excess: dict[str, list[float]]) -> pd.DataFrame:
    """One seed on M=2, T in (1, 2, 3): returning visits 0, 2, 4; oracle regret 1, first-visit regrets 0.5, 0.7, 0.9."""
    rows = []
    for agent, extra in {"oracle": [0.0, 0.0, 0.0], **excess}.items():
        for t, (add, first) in enumerate(zip(extra, (0.5, 0.7, 0.9), strict=True), start=1):
            rows.append(
                {"agent": agent, "seed": 0, "scenario": "synthetic", "tasks_per_cycle": 2, "cycles": t,
                 "phase_length": 4, "slots": 1, "rank": 4, "bank_capacity": math.nan, "returning_visits": (t - 1) * 2,
                 "cumulative_regret": 1 + add, "first_visit_regret": first}
            )  # fmt: skip
    return with_capabilities(pd.DataFrame(rows))


def test_theorem1_fit_by_hand():
    fit = theorem1_fit(hand_summary({"fresh": [0.0, 2.0, 5.0], "similarity": [0.0, 0.0, 0.0]})).set_index("agent")
    assert list(fit.index) == ["similarity", "fresh"]  # the oracle is the reference, not a row
    # points (0, 0), (2, 2), (4, 5): x̄ = 2, ȳ = 7/3, Sxy = 10, Sxx = 8
    assert fit.loc["fresh", "slope"] == pytest.approx(1.25)
    assert fit.loc["fresh", "intercept"] == pytest.approx(7 / 3 - 2.5)
    # residuals 1/6, -1/3, 1/6: SSres = 1/6; SStot = 114/9; R² = 1 - 9/684 = 75/76
    assert fit.loc["fresh", "r2"] == pytest.approx(75 / 76)
    assert fit.loc["similarity", "slope"] == 0 and math.isnan(fit.loc["similarity", "r2"])  # flat: nothing to explain
    assert (fit["n_points"] == 3).all()
    assert fit["delta_switch"].tolist() == pytest.approx([0.7, 0.7])  # mean of the oracle's 0.5, 0.7, 0.9
    assert (fit["delta_switch_source"] == "oracle first_visit_regret").all()


def test_theorem1_fits_one_line_per_agent_and_setting():
    """Strata that differ in more than M and T (here heads) are separate series, each against its own oracle."""
    per_task = hand_summary({"fresh": [0.0, 2.0, 5.0]}).assign(heads="task")
    shared = hand_summary({"fresh": [0.0, 4.0, 10.0]}).assign(heads="slot")
    shared["cumulative_regret"] += 3.0  # the oracle pays as much more as fresh: the excess is unchanged
    fit = theorem1_fit(pd.concat([per_task, shared], ignore_index=True)).set_index("series")
    assert list(fit.index) == ["fresh", "fresh heads=slot"]
    assert (fit["agent"] == "fresh").all()
    assert fit.loc["fresh", "slope"] == pytest.approx(1.25)
    assert fit.loc["fresh heads=slot", "slope"] == pytest.approx(2.5)
    assert fit.loc["fresh heads=slot", "r2"] == pytest.approx(75 / 76)
    assert (fit["n_points"] == 3).all()


def test_theorem1_fit_on_the_synthetic_grid(summary):
    fit = theorem1_fit(summary).set_index("agent")
    assert fit.loc["fresh", "slope"] == pytest.approx(1.0, rel=0.05)  # relearning costs LEARN.sum() = 1 per visit
    assert fit.loc["fresh", "r2"] >= 0.99
    assert abs(fit.loc["similarity", "slope"]) <= 0.1 * fit.loc["fresh", "slope"]
    assert fit.loc["keep", "slope"] == pytest.approx(0.3, rel=0.1)
    assert fit.loc["fresh", "n_points"] == len(GRID) * len(SEEDS)
    assert math.isnan(fit.loc["ppo", "slope"])  # one stratum: one number of returning visits, no line
    oracle = summary[summary["agent"] == "oracle"]
    assert fit.loc["fresh", "delta_switch"] == pytest.approx(oracle["first_visit_regret"].mean())
    points = excess_regret(summary)
    assert len(points) == 3 * len(GRID) * len(SEEDS) + len(SEEDS)  # similarity, fresh, keep everywhere; ppo once


def test_theorem1_fit_without_the_oracle_says_what_to_add(summary):
    with pytest.raises(ValueError, match=r"hidden task labels .*no runs of one .*add one \(oracle\) to the sweep"):
        theorem1_fit(summary[summary["agent"] != "oracle"])


def test_the_reference_is_whichever_agent_reads_hidden_labels():
    """Roles come from the capability columns, not from names: a renamed oracle is still the reference."""
    summary = hand_summary({"fresh": [0.0, 2.0, 5.0]}).replace({"agent": {"oracle": "cheat"}})
    fit = theorem1_fit(summary)
    assert fit["agent"].tolist() == ["fresh"]
    assert fit["delta_switch_source"].iloc[0] == "cheat first_visit_regret"
    assert excess_regret(summary)["excess_regret"].tolist() == pytest.approx([0.0, 2.0, 5.0])


def test_several_references_the_first_alphabetically_is_the_reference():
    summary = hand_summary({"fresh": [0.0, 2.0, 5.0], "similarity": [1.0, 1.0, 1.0]})
    summary = summary.replace({"agent": {"similarity": "seer"}}).assign(reads_hidden=lambda f: f["agent"] != "fresh")
    assert reference_agent(summary) == "oracle"
    fit = theorem1_fit(summary).set_index("agent")
    assert list(fit.index) == ["seer", "fresh"]  # the other reference is compared like any agent
    assert fit.loc["seer", "slope"] == pytest.approx(0.0) and fit.loc["seer", "intercept"] == pytest.approx(1.0)


def test_delta_switch_falls_back_to_the_first_memoryless_agent():
    summary = hand_summary({"keep": [0.0, 1.0, 2.0], "fresh": [0.0, 2.0, 5.0]})
    summary.loc[summary["agent"] == "oracle", "first_visit_regret"] = math.nan
    summary.loc[summary["agent"] == "keep", "first_visit_regret"] = 5.0
    fit = theorem1_fit(summary)
    assert (fit["delta_switch_source"] == "fresh first_visit_regret").all()  # fresh before keep, alphabetically
    assert fit["delta_switch"].iloc[0] == pytest.approx(0.7)


def test_agents_are_ordered_by_capability_then_name():
    """Reference, rules with memory, memoryless rules, learned controllers; colours follow the order."""
    capabilities = CAPABILITIES | {"bandit": {"needs_training"}, "my_rule": set(), "coin": {"memoryless"}}
    summary = with_capabilities(pd.DataFrame({"agent": sorted(capabilities)}), capabilities)
    order = ["oracle", "my_rule", "similarity", "coin", "fresh", "keep", "random", "round_robin", "bandit",
             "maskable_ppo", "ppo"]  # fmt: skip
    assert agent_order(summary) == order
    assert list(colours(order)) == order and colours(order)["oracle"] != colours(order)["my_rule"]


def test_a_summary_of_an_older_sweep_names_the_missing_capability_columns(results_dir, tmp_path):
    root = tmp_path / "older"
    root.mkdir()
    for name in ("steps.csv", "matrices.json"):
        (root / name).write_bytes((results_dir / name).read_bytes())
    older = pd.read_csv(results_dir / "summary.csv").drop(columns=list(CAPABILITY_COLUMNS))
    older.to_csv(root / "summary.csv", index=False)
    missing = r"lacks column\(s\) reads_hidden, memoryless, needs_training;.*re-run `nsr sweep` with the same command"
    with pytest.raises(ValueError, match=missing):
        load_results(root)


def test_a_missing_column_is_named(summary):
    with pytest.raises(ValueError, match=r"summary lacks column.* first_visit_regret.*nsr sweep"):
        theorem1_fit(summary.drop(columns="first_visit_regret"))
    with pytest.raises(ValueError, match="column seed must be numeric"):
        metric_table(summary.assign(seed="zero"))


def test_paper_vs_ours_by_hand(summary):
    table = paper_vs_ours(summary).set_index("claim")
    returning = summary[summary["cycles"] > 1]
    fresh, similarity = (returning[returning["agent"] == a] for a in ("fresh", "similarity"))
    assert table.loc["bank cuts cyclic recovery time", "ours_value"] == math.inf  # similarity recovers in 0 steps
    assert table.loc["bank cuts cyclic recovery time", "ours"] == "∞: fresh 3 / similarity 0 steps"
    assert table.loc["recovery steps, ppo (paper: RL)", "ours_value"] == pytest.approx(2.0)
    assert "recovery steps, maskable_ppo (paper: RL)" not in table.index  # a row per learned controller that ran
    # BWT fresh -0.3, keep -0.1, similarity -0.02 everywhere: mean(0.3, 0.1) / 0.02 = 10
    assert table.loc["closer to zero BWT than memoryless", "ours_value"] == pytest.approx(10.0)
    assert table.loc["closer to zero BWT than memoryless", "ours"] == "10x: BWT similarity -0.02, fresh -0.3, keep -0.1"
    assert table.loc["bank memory per task", "ours_value"] == pytest.approx(BYTES / 1e6)
    assert table.loc["bank memory per task", "paper_value"] == 0.29
    assert len(fresh) == len(similarity) == 12


def test_the_bwt_claim_counts_only_shared_head_strata_when_there_are_some(summary):
    """With a head per task nothing can be forgotten; those strata would dilute the contrast."""
    forgets = summary["agent"] != "similarity"
    per_task = summary.assign(heads="task", bwt=summary["bwt"].where(~forgets, 0.0))  # the memoryless forget nothing
    shared = summary.assign(heads="slot", cycles=summary["cycles"] + 10)
    table = paper_vs_ours(pd.concat([per_task, shared], ignore_index=True)).set_index("claim")
    alone = paper_vs_ours(summary).set_index("claim")
    claim = "closer to zero BWT than memoryless"
    assert table.loc[claim, "ours_value"] == pytest.approx(alone.loc[claim, "ours_value"])
    assert "shared heads (heads=slot) only" in table.loc[claim, "measured_as"]
    assert "shared heads" not in alone.loc[claim, "measured_as"]
    pooled = paper_vs_ours(pd.concat([per_task, shared.assign(heads="task")], ignore_index=True))
    assert pooled.set_index("claim").loc[claim, "ours_value"] == pytest.approx(alone.loc[claim, "ours_value"] / 2)


def test_each_memoryless_rule_is_compared_with_similarity_where_both_ran(summary):
    """A rule run only where similarity was not (here round_robin) neither counts nor voids the row."""
    elsewhere = summary[summary["agent"] == "fresh"].assign(agent="round_robin", cycles=99, bwt=-0.5)
    table = paper_vs_ours(pd.concat([summary, elsewhere], ignore_index=True)).set_index("claim")
    assert table.loc["closer to zero BWT than memoryless", "ours_value"] == pytest.approx(10.0)


def test_the_distillation_claim_pairs_strata_that_differ_only_in_distill_weight(summary):
    without = summary.assign(heads="slot", distill_weight=0.0, bwt=-0.2)
    held = summary.assign(heads="slot", distill_weight=1.0, bwt=-0.05)
    claim = "distillation protects earlier tasks"
    row = paper_vs_ours(pd.concat([without, held], ignore_index=True)).set_index("claim").loc[claim]
    assert row["ours_value"] == pytest.approx(4.0)
    assert row["ours"] == "4x: BWT of keep -0.2 -> -0.05"
    assert math.isnan(row["paper_value"])
    for partial in (held, summary, pd.concat([without, held.assign(tasks_per_cycle=9)], ignore_index=True)):
        row = paper_vs_ours(partial).set_index("claim").loc[claim]  # no pair that differs only in distill_weight
        assert math.isnan(row["ours_value"]) and row["ours"].startswith("not run")


def test_paper_vs_ours_ratio_of_finite_recoveries_and_missing_agents(summary):
    slower = summary.assign(
        mean_recovery_steps=np.where(summary["agent"] == "similarity", 0.5, summary["mean_recovery_steps"])
    )
    table = paper_vs_ours(slower).set_index("claim")
    assert table.loc["bank cuts cyclic recovery time", "ours_value"] == pytest.approx(3.0 / 0.5)
    assert table.loc["bank cuts cyclic recovery time", "ours"] == "6x: fresh 3 / similarity 0.5 steps"
    alone = paper_vs_ours(summary[summary["agent"] == "oracle"]).set_index("claim")
    assert alone["ours_value"].isna().all()
    assert alone.loc["bank cuts cyclic recovery time", "ours"] == "not run (needs fresh and similarity)"
    assert alone.loc["recovery steps, RL (paper: RL)", "ours"] == "not run (needs a learned controller)"


def test_regret_curves_end_at_each_runs_cumulative_regret(results_dir, summary):
    curves = regret_curves(load_results(results_dir), resamples=200)
    final = curves.groupby(["agent", "stratum"]).tail(1).set_index(["agent", "stratum"])
    assert final.loc[("fresh", "synthetic M=3 T=4"), "step"] == 3 * 4 * PHASE_LENGTH - 1
    expected = summary.query("agent == 'fresh' and tasks_per_cycle == 3 and cycles == 4")["cumulative_regret"].mean()
    assert final.loc[("fresh", "synthetic M=3 T=4"), "mean"] == pytest.approx(expected)
    assert (curves["low"] <= curves["mean"] + 1e-12).all() and (curves["mean"] <= curves["high"] + 1e-12).all()
    assert (curves.groupby(["agent", "stratum"])["mean"].diff().dropna() >= 0).all()  # regret only accumulates


# --- the report on disk -------------------------------------------------------------------------


def test_write_report_writes_every_table_and_figure(written, results_dir):
    out = results_dir / "report"
    names = {p.name for p in written.tables + written.figures}
    for stem in ("metrics", "metrics_by_stratum", "paper_vs_ours", "theorem1", "falsification"):
        assert {f"{stem}.md", f"{stem}.csv"} <= names
    for stem in ("regret_curves", "recovery_steps", "accuracy_matrices", "allocation", "theorem1"):
        assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    assert written.skipped == []
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    metrics = (out / "metrics.md").read_text()
    assert "| fresh | 18 | 3 [3, 3] |" in metrics  # runs, then recovery steps: mean [95% CI]
    theorem = pd.read_csv(out / "theorem1.csv").set_index("agent")
    assert theorem.loc["fresh", "slope"] == pytest.approx(1.0, rel=0.05)
    index = (out / "report.md").read_text()
    assert "![theorem1](theorem1.png)" in index and "| bank memory per task | 0.29 MB | 0.0359 MB |" in index
    verdict = pd.read_csv(out / "falsification.csv")  # ppo relearns 10% on returns, similarity nothing
    assert verdict[["stratum", "best_challenger"]].values.tolist() == [["synthetic M=3 T=2", "ppo"]]
    assert verdict["verdict"].iloc[0] == "no verdict: 3 paired seeds, a verdict needs 5" and "falsification" in index
    assert pd.read_csv(out / "falsification_pairs.csv")["clearly_worse"].tolist() == [True]
    contenders = (out / "falsification.md").read_text().split("Mean over seeds [95% CI] of the contenders")[1]
    assert [line.split(" | ")[1] for line in contenders.splitlines() if line.startswith("| synthetic")] == [
        "oracle",
        "similarity",
        "ppo",
    ]  # the reference, the rule and the challenger, not the memoryless rules


def test_report_skips_what_the_results_cannot_support(tmp_path):
    root = synthetic_results(
        tmp_path / "results", agents=("similarity", "fresh"), grid=[(2, 2)], seeds=(0,), ppo_on=None
    )
    (root / "report").mkdir()
    (root / "report" / "theorem1.png").write_bytes(b"from an earlier report")
    matrices = json.loads((root / "matrices.json").read_text())
    (root / "matrices.json").write_text(json.dumps({k: v for k, v in matrices.items() if k.startswith("fresh")}))
    report = write_report(root, resamples=50)
    assert any("no runs of an agent that reads the hidden task labels" in s for s in report.skipped)
    assert any(s.startswith("falsification table: no stratum") for s in report.skipped)
    assert not (root / "report" / "theorem1.png").exists()  # a stale figure is not left beside the new ones
    assert not (root / "report" / "metrics_by_stratum.md").exists()  # a single stratum
    assert (root / "report" / "accuracy_matrices.png").exists()  # fresh's matrix alone; similarity's is skipped


@pytest.mark.parametrize("name", ["summary.csv", "steps.csv", "matrices.json"])
def test_a_missing_file_is_named_with_what_to_run(tmp_path, name):
    root = synthetic_results(tmp_path / "results", agents=("fresh",), grid=[(2, 1)], seeds=(0,))
    (root / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{name} is missing; run `nsr sweep CONFIG --out DIR` first"):
        load_results(root)


def test_a_killed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    root = synthetic_results(tmp_path / "results", agents=("fresh",), grid=[(2, 1)], seeds=(0,))
    (root / "report").mkdir()
    (root / "report" / "metrics.csv").write_text("previous report\n")

    def half_then_die(self, path, **kwargs):
        Path(path).write_text("agent,metr")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_report(root, resamples=50)
    assert [p.name for p in (root / "report").iterdir()] == ["metrics.csv"]
    assert (root / "report" / "metrics.csv").read_text() == "previous report\n"


def test_nsr_report_prints_where_everything_is(tmp_path, capsys):
    root = synthetic_results(tmp_path / "results", agents=("similarity", "oracle", "fresh"), grid=[(2, 1), (2, 3)])
    assert main(["report", str(root), "--resamples", "50"]) == 0
    out = capsys.readouterr().out
    assert "| bank cuts cyclic recovery time | 10x | ∞: fresh 3 / similarity 0 steps |" in out
    for name in ("metrics.md", "theorem1.csv", "regret_curves.png", "allocation.pdf"):
        assert f"  {root / 'report' / name}\n" in out
    assert f"index: {root / 'report' / 'report.md'}" in out


def test_nsr_report_without_results_prints_one_error_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsr report: results directory") and "run `nsr sweep CONFIG --out DIR` first" in err
    assert err.count("\n") == 1
    assert SWEEP_HINT in err


def test_the_mechanisms_table_compares_designs_per_stream_and_agent(summary):
    svd = summary.assign(memory="svd", protect="distill")
    share = svd.assign(memory="share", cell=svd["cell"] + "-share", cumulative_regret=svd["cumulative_regret"] + 1)
    eblora = svd.assign(protect="eblora", cell=svd["cell"] + "-eblora", bwt=svd["bwt"] / 2)
    frame = pd.concat([svd, share, eblora], ignore_index=True)
    table = mechanisms_table(metric_table(frame, by_stratum=True, resamples=200), frame)
    assert set(table["design"]) == {"svd", "share", "svd + eblora"}
    regret = table[table["metric"] == "cumulative_regret"].set_index(["stratum", "agent", "design"])["mean"]
    for (stratum, agent, design), value in regret.items():
        if design == "share":
            svd_stratum = stratum.replace(" memory=share", "")
            assert value == pytest.approx(regret[(svd_stratum, agent, "svd")] + 1)
    kilobytes = table[table["metric"] == "bytes_per_task"]["mean"]
    assert np.allclose(kilobytes, BYTES / 1e3)
    assert "svd + eblora" in mechanisms_markdown(table) and mechanisms_table(metric_table(svd), svd) is None
