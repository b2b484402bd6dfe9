"""The sweep: config errors before any work, resumable runs, parallel and Ray backends, the Theorem 1 trend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main
from analysis.report import load_results, theorem1_fit
from analysis.sweep import collect_sweep, run_sweep
from analysis.sweep_config import ConfigError, load_config


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.read_csv(out / "summary.csv").sort_values(["cell", "episode"]).reset_index(drop=True)
    steps = pd.read_csv(out / "steps.csv").sort_values(["cell", "episode", "step"]).reset_index(drop=True)
    return summary, steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh]\nseeds: [0]\ncolour: red\n", "config key 'colour'"),
        ("scenarios: [{scenario: synthetic}]\nagents: [smart]\nseeds: [0]\n", "'agents': 'smart' is not an agent"),
        ("scenarios: [{scenario: imagenet}]\nagents: [fresh]\nseeds: [0]\n", r"'scenarios\[0\].scenario': 'imagenet'"),
        (
            "scenarios: [{scenario: synthetic, grid: {slot: [1]}}]\nagents: [fresh]\nseeds: [0]\n",
            r"'scenarios\[0\].grid.slot' is not a scenario field",
        ),
        ("scenarios: [{scenario: synthetic, grid: {slots: [0]}}]\nagents: [fresh]\nseeds: [0]\n", "slots=0"),
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh]\nseeds: [zero]\n", "'seeds' must be an integer"),
        ("scenarios: [{scenario: synthetic}]\nagents: [ppo]\nseeds: [0]\n", "'ppo.timesteps' is missing"),
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh]\n", "'seeds' is missing"),
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh]\nseeds: [0]\nepisodes: 0\n", "'episodes'"),
        ("[unclosed\n", "not valid YAML"),
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh]\nseeds: [0, 0]\n", "'seeds' lists a seed twice"),
        ("scenarios: [{scenario: synthetic}]\nagents: [fresh, fresh]\nseeds: [0]\n", "lists an agent twice"),
        ("scenarios: [{scenario: synthetic}]\nagents: []\nseeds: [0]\n", "at least one agent"),
        (
            "scenarios: [{scenario: synthetic, grid: {cycles: []}}]\nagents: [fresh]\nseeds: [0]\n",
            r"'scenarios\[0\].grid.cycles' is an empty list",
        ),
        (
            "scenarios: [{scenario: synthetic}]\nagents: [similarity]\nseeds: [0]\n"
            "agent_kwargs: {similarity: {treshold: 0.9}}\n",
            "'agent_kwargs.similarity.treshold' is not an argument",
        ),
        (
            "scenarios: [{scenario: synthetic}]\nagents: [ppo]\nseeds: [0]\n"
            "ppo: {timesteps: 10, kwargs: {n_step: 8}}\n",
            "'ppo.kwargs.n_step' is not an argument",
        ),
    ],
)
def test_a_bad_config_stops_before_any_work_naming_the_key(tmp_path, text, message):
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match=message):
        run_sweep(write(tmp_path, text), out, progress=False)
    assert not out.exists()


def test_the_shipped_configs_load():
    for name in ("quick", "ablation", "theorem1"):
        config = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
        assert config.name == name and config.cells
        assert len({cell.id for cell in config.cells}) == len(config.cells)


def test_a_run_writes_one_summary_row_per_cell_and_a_rerun_skips_them(tmp_path, tiny_sweep):
    config = write(tmp_path, tiny_sweep)
    out = tmp_path / "results"
    summary = run_sweep(config, out, progress=False)
    assert len(summary) == 3 * 2 * 2 * 2 and summary.cell.is_unique
    required = {"scenario", "agent", "seed", "tasks_per_cycle", "cycles", "slots", "rank", "cumulative_regret"}
    required |= {"mean_recovery_steps", "acc", "bwt", "forgetting", "bytes_per_task", "retrieval_precision"}
    assert required <= set(summary.columns)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    run_sweep(config, out, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before  # nothing re-run
    matrices = json.loads((out / "matrices.json").read_text())
    assert set(matrices) == set(summary.cell)
    with pytest.raises(ConfigError, match="holds the results of another config"):
        run_sweep(write(tmp_path, tiny_sweep.replace("seeds: [0, 1]", "seeds: [2]"), "other.yaml"), out)


def test_every_scenario_field_is_recorded_and_any_overridden_one_splits_strata(tmp_path):
    """Two blocks that differ only in a field outside the usual columns (heads, lr) stay two strata."""
    config = write(
        tmp_path,
        """
name: fields
agents: [fresh]
seeds: [0]
scenarios:
  - scenario: synthetic
    grid: {cycles: 1, heads: [task, slot]}
  - scenario: synthetic
    grid: {cycles: 1, lr: 0.01}
""",
    )
    summary = run_sweep(config, tmp_path / "results", progress=False)
    assert sorted(summary["heads"]) == ["slot", "task", "task"]
    assert sorted(summary["lr"]) == [0.01, 0.02, 0.02]
    strata = load_results(tmp_path / "results").summary["stratum"]
    assert strata.is_unique and strata.str.contains("heads=slot").sum() == 1 and strata.str.contains("lr=0.01").any()
    assert not strata.str.contains("heads=task|lr=0.02").any()  # the registered values go unnamed


def test_records_from_before_the_summary_carried_every_field_are_completed_on_resume(tmp_path, tiny_sweep):
    config, out = write(tmp_path, tiny_sweep), tmp_path / "results"
    full = run_sweep(config, out, progress=False)
    for path in (out / "cells").glob("*.json"):  # as an older version wrote them: the six columns only
        record = json.loads(path.read_text())
        for row in record["summary"]:
            for column in ("source", "schedule", "heads", "lr", "distill_weight"):
                del row[column]
        path.write_text(json.dumps(record))
    resumed = run_sweep(config, out, progress=False)
    pd.testing.assert_frame_equal(resumed[full.columns], full)
    assert load_results(out).summary["stratum"].nunique() == 4


def test_a_killed_run_resumes_to_the_same_tables_with_no_cell_lost_or_doubled(tmp_path, tiny_sweep):
    config = write(tmp_path, tiny_sweep)
    reference = tmp_path / "reference"
    run_sweep(config, reference, progress=False)
    out = tmp_path / "killed"
    script = f"from analysis.sweep import run_sweep; run_sweep({str(config)!r}, {str(out)!r}, progress=False)"
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len(list((out / "cells").glob("*.json"))) >= 3:  # killed part-way: after three cells
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list((out / "cells").glob("*.json")))
    assert 0 < finished < 24, "the kill should land mid-run"
    run_sweep(config, out, progress=False)
    for resumed, uninterrupted in zip(tables(out), tables(reference), strict=True):
        pd.testing.assert_frame_equal(resumed, uninterrupted)
    assert not list(out.rglob("*.tmp"))


def test_two_local_processes_give_the_same_tables_as_one(tmp_path, tiny_sweep):
    config = write(tmp_path, tiny_sweep)
    run_sweep(config, tmp_path / "one", jobs=1, progress=False)
    run_sweep(config, tmp_path / "two", jobs=2, progress=False)
    for a, b in zip(tables(tmp_path / "one"), tables(tmp_path / "two"), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_ray_backend_on_a_local_instance_gives_the_same_tables(tmp_path, tiny_sweep):
    pytest.importorskip("ray", reason="the distributed extra is not installed")
    config = write(tmp_path, tiny_sweep)
    run_sweep(config, tmp_path / "local", progress=False)
    run_sweep(config, tmp_path / "ray", backend="ray", progress=False)
    for a, b in zip(tables(tmp_path / "local"), tables(tmp_path / "ray"), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_ppo_cells_train_once_and_reuse_the_saved_model(tmp_path, tiny_sweep):
    text = tiny_sweep.replace("[similarity, fresh, oracle]", "[maskable_ppo]").replace("[0, 1]", "[0]")
    text = text.replace("tasks_per_cycle: [2, 3], cycles: [1, 2]", "tasks_per_cycle: 2, cycles: 2")
    config = write(tmp_path, text + "ppo: {timesteps: 256}\n")
    out = tmp_path / "results"
    run_sweep(config, out, progress=False)
    (model,) = (out / "models").glob("*/model.zip")
    stamp = model.stat().st_mtime_ns
    (next((out / "cells").glob("*.json"))).unlink()  # the cell is redone, its model reused
    summary = run_sweep(config, out, progress=False)
    assert model.stat().st_mtime_ns == stamp and len(summary) == 1


@pytest.fixture(scope="module")
def theorem_grid(tmp_path_factory):
    """The real default scenario on one slot: M in {2, 3, 4} tasks x T in {1, 2, 3} cycles."""
    out = tmp_path_factory.mktemp("theorem")
    config = write(
        out,
        "scenarios: [{scenario: default, grid: {tasks_per_cycle: [2, 3, 4], cycles: [1, 2, 3], slots: 1}}]\n"
        "agents: [fresh, similarity, oracle]\nseeds: [0]\n",
    )
    return run_sweep(config, out / "results", progress=False)


def test_theorem1_memoryless_excess_regret_grows_linearly_and_the_bank_stays_flat(theorem_grid):
    fit = theorem1_fit(theorem_grid).set_index("agent")
    memoryless, bank = fit.loc["fresh"], fit.loc["similarity"]
    assert memoryless.slope > 0 and memoryless.r2 >= 0.9, memoryless.to_dict()
    assert abs(bank.slope) <= 0.1 * memoryless.slope, bank.to_dict()
    assert 0.5 * memoryless.delta_switch < memoryless.slope < 3 * memoryless.delta_switch  # about Delta_switch


DOOMED_CELL: dict = {"id": None, "run_cell": None}  # set by the test before the workers fork


def run_cell_failing_once(cell, models):
    """``run_cell``, except for the one doomed cell (module level: forked workers unpickle it by name)."""
    if cell.id == DOOMED_CELL["id"]:
        raise FloatingPointError("synthetic failure")
    return DOOMED_CELL["run_cell"](cell, models)


def test_a_failing_cell_keeps_every_other_finished_cell(tmp_path, tiny_sweep, monkeypatch):
    import analysis.sweep as sweep

    config = write(tmp_path, tiny_sweep)
    DOOMED_CELL.update(id=load_config(config).cells[5].id, run_cell=sweep.run_cell)
    monkeypatch.setattr(sweep, "run_cell", run_cell_failing_once)  # forked workers inherit the patch
    out = tmp_path / "results"
    with pytest.raises(RuntimeError, match=rf"1 cell\(s\) failed, the first {DOOMED_CELL['id']}: synthetic failure"):
        run_sweep(config, out, jobs=2, progress=False)
    assert len(list((out / "cells").glob("*.json"))) == 23


def test_a_ppo_model_is_keyed_by_what_it_was_trained_on(tmp_path, tiny_sweep):
    text = tiny_sweep.replace("[similarity, fresh, oracle]", "[ppo]") + "ppo: {timesteps: 100}\n"
    cells = load_config(write(tmp_path, text)).cells
    other_budget = load_config(write(tmp_path, text.replace("100", "200"), "b.yaml")).cells
    keys = {cell.model_key for cell in cells}
    assert len(keys) == len(cells)  # every stratum and seed its own model
    assert keys.isdisjoint(cell.model_key for cell in other_budget)


def test_collect_writes_the_tables_of_the_finished_cells_of_an_unfinished_run(tmp_path, tiny_sweep, capsys):
    config = write(tmp_path, tiny_sweep)
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match=r"no config\.yaml"):
        collect_sweep(config, out)
    run_sweep(config, out, progress=False)
    reference_summary, reference_steps = tables(out)
    missing = load_config(config).cells[4].id
    kept_steps = reference_steps[reference_steps.cell != missing].reset_index(drop=True)
    for name in (f"cells/{missing}.json", f"cells/{missing}.steps.csv", "steps.csv", "matrices.json"):
        (out / name).unlink()  # as a run killed before its last cell and its end-of-run tables leaves it
    assert collect_sweep(config, out) == (23, 24)
    summary, steps = tables(out)
    assert missing not in set(summary.cell)
    pd.testing.assert_frame_equal(steps, kept_steps)
    kept = reference_summary[reference_summary.cell != missing].reset_index(drop=True)
    pd.testing.assert_frame_equal(summary.reset_index(drop=True), kept)
    assert set(load_results(out).summary.cell) == set(kept.cell)
    assert main(["sweep", str(config), "--out", str(out), "--collect"]) == 0
    assert "collected 23 of 24 cells" in capsys.readouterr().out
    other = write(tmp_path, tiny_sweep.replace("seeds: [0, 1]", "seeds: [0]"), name="other.yaml")
    with pytest.raises(ConfigError, match="another config"):
        collect_sweep(other, out)
