"""The retrieval experiment (analysis.retrieval) and its report part (analysis.retrieval_report), on SYNTHETIC."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from test_report import synthetic_results

from analysis.cli import main
from analysis.report import write_report
from analysis.retrieval import _bank, arrow_scores, run_retrieval, train_alone
from analysis.retrieval_report import QUERY_COLUMNS, TASK_COLUMNS, energy_columns, precision_at_1, threshold_curves
from nsr_env.config import KEYS
from nsr_env.scenarios import make_scenario, prepare

SIZES, ENERGIES, PROBES = (2, "all"), (0.5, 1.0), 3
"""SYNTHETIC has 4 tasks: banks of 2 and 4 entries; energy 0.5 truncates the rank-4 adapters, 1.0 keeps them."""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """One small run: 4 SYNTHETIC tasks, 3 probes of 4 images each, every key."""
    out = tmp_path_factory.mktemp("results")
    return run_retrieval("synthetic", out, SIZES, ENERGIES, probes=PROBES, steps=5, progress=False, probe_size=4)


def test_the_experiment_writes_the_documented_files(experiment):
    folder = experiment.directory
    queries = pd.read_csv(folder / "queries.csv")
    assert tuple(queries.columns) == QUERY_COLUMNS
    assert len(queries) == len(ENERGIES) * len(KEYS) * (2 + 4) * PROBES
    tasks = pd.read_csv(folder / "tasks.csv")
    assert tuple(tasks.columns) == TASK_COLUMNS + tuple(c for e in ENERGIES for c in energy_columns(e))
    assert len(tasks) == 4 and tasks["name"].tolist() == [f"synthetic[{i}]" for i in range(4)]
    np.testing.assert_allclose(tasks["contribution"], tasks["accuracy"] - tasks["base_accuracy"])
    assert (tasks[energy_columns(0.5)[0]] <= tasks[energy_columns(1.0)[0]]).all()
    assert (tasks[energy_columns(0.5)[1]] < tasks[energy_columns(1.0)[1]]).any()  # fewer components, fewer bytes
    config = json.loads((folder / "config.json").read_text())
    assert config["sizes"] == [2, 4] and config["probe_size"] == 4 and config["overrides"] == {"probe_size": 4}
    assert config["seconds"]["total"] > 0 and config["recall_ms"]["input_similarities"] > 0


def test_ranks_agree_with_scores_and_precision_is_a_share(experiment):
    queries = experiment.queries
    top = queries["top_task"] == queries["task"]
    assert (top == (queries["own_rank"] == 1)).all()
    assert (queries["top_score"] >= queries["own_score"]).all()
    assert (queries["top_score"] >= queries["best_other_score"]).all()
    np.testing.assert_array_equal(queries["top_score"].where(top, queries["best_other_score"]), queries["top_score"])
    assert queries["own_rank"].between(1, queries["entries"]).all()
    precision = precision_at_1(queries, resamples=100)
    assert len(precision) == len(ENERGIES) * len(KEYS) * 2
    assert precision["precision"].between(0, 1).all()
    assert (precision["ci_low"] <= precision["precision"] + 1e-12).all()
    assert (precision["precision"] <= precision["ci_high"] + 1e-12).all()


def test_only_arrow_depends_on_the_energy(experiment):
    by_energy = {e: g.drop(columns="energy").reset_index(drop=True) for e, g in experiment.queries.groupby("energy")}
    low, high = by_energy[0.5], by_energy[1.0]
    for key in ("input", "pooled"):
        pd.testing.assert_frame_equal(low[low["key"] == key], high[high["key"] == key])
    assert not np.allclose(low.loc[low["key"] == "arrow", "own_score"], high.loc[high["key"] == "arrow", "own_score"])


def test_exact_keys_always_surface_the_own_entry(tmp_path):
    run = run_retrieval(
        "synthetic", tmp_path, ("all",), (0.99,), ("input", "pooled"), probes=2, steps=2, progress=False
    )  # synthetic's probe_size is 0: the query is the stored key itself
    assert (precision_at_1(run.queries, resamples=20)["precision"] == 1).all()
    np.testing.assert_allclose(run.queries["own_score"], 1, atol=1e-6)


def test_the_first_positions_score_as_a_bank_of_just_those_entries():
    data = prepare(make_scenario("synthetic"), progress=False)
    trained = train_alone(data, 4, steps=3, seed=0)
    keys = torch.stack([task.key for task in data.tasks])
    queries = [task.probe_inputs[:3].flatten(0, 1)[None] for task in data.tasks]  # one query per task
    full, small = _bank(trained, keys, 0.9), _bank(trained[:2], keys[:2], 0.9)
    assert small.capacity == 2 and [small.task_at(p) for p in range(2)] == [0, 1]
    torch.testing.assert_close(full.similarities(keys[:2])[:, :2], small.similarities(keys[:2]))
    torch.testing.assert_close(arrow_scores(full, queries[:2])[:, :2], arrow_scores(small, queries[:2]))
    route = torch.stack([full.route_scores(query[0]) for query in queries])
    torch.testing.assert_close(arrow_scores(full, queries), route)


@pytest.mark.parametrize(
    ("arguments", "culprit"),
    [({"energies": (1.5,)}, "energies"), ({"sizes": (0,)}, "sizes"), ({"keys": ("mean",)}, "keys"),
     ({"probes": 0}, "probes"), ({"sizes": (10,)}, "sizes")],
)  # fmt: skip
def test_bad_arguments_name_the_culprit(tmp_path, arguments, culprit):
    with pytest.raises(ValueError, match=culprit):
        run_retrieval("synthetic", tmp_path, **{"steps": 1, "progress": False} | arguments)


def test_threshold_curves_split_every_query(experiment):
    curves = threshold_curves(experiment.queries)
    assert (curves["entries"] == 4).all()
    np.testing.assert_allclose(curves[["correct", "wrong", "none"]].sum(axis=1), 1)
    for _, curve in curves.groupby(["key", "energy"]):
        assert curve["none"].iloc[0] == 0 and (np.diff(curve["correct"]) <= 0).all()  # the lowest t always recalls
        assert curve["best"].iloc[0]


def test_the_report_writes_the_retrieval_part_and_leaves_it_out_without_results(tmp_path, experiment):
    root = synthetic_results(tmp_path / "results", agents=("fresh",), grid=[(2, 1)], seeds=(0,), ppo_on=None)
    shutil.copytree(experiment.directory, root / "retrieval")
    report = write_report(root, resamples=50)
    out = root / "report"
    names = {p.name for p in report.tables + report.figures}
    for stem in ("retrieval_precision", "threshold_sensitivity"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.png", f"{stem}.pdf"} <= names
        assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    assert {"adapter_contribution.md", "adapter_contribution.csv"} <= names
    assert len(pd.read_csv(out / "adapter_contribution.csv")) == 4
    index = (out / "report.md").read_text()
    assert "![retrieval_precision](retrieval_precision.png)" in index and "## adapter_contribution" in index
    skipped = report.skipped
    shutil.rmtree(root / "retrieval")
    again = write_report(root, resamples=50)
    assert again.skipped == skipped
    assert not [p for p in out.iterdir() if p.stem in ("retrieval_precision", "threshold_sensitivity")]
    assert not (out / "adapter_contribution.md").exists()
    assert "adapter_contribution" not in (out / "report.md").read_text()


def test_the_command_runs_and_report_still_needs_a_sweep(tmp_path, capsys):
    arguments = ["--scenario", "synthetic", "--out", str(tmp_path), "--sizes", "2", "all", "--probes", "2"]
    assert main(["retrieval", *arguments, "--steps", "2", "--set", "probe_size=4", "--keys", "input"]) == 0
    printed = capsys.readouterr().out
    assert "precision@1 with 4 stored entries" in printed and f"nsr report {tmp_path}" in printed
    assert (tmp_path / "retrieval" / "queries.csv").is_file()
    assert main(["report", str(tmp_path)]) == 2  # retrieval results alone are no sweep
    assert "summary.csv is missing" in capsys.readouterr().err


def test_the_retrieval_report_imports_no_torch():
    code = "import sys, analysis.retrieval_report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
