"""The ablation sweep: agents x seeds x scenarios x scenario overrides, one pure function per cell.

A config (YAML) names the grid; :func:`run_sweep` runs the cells that are not finished
yet — in this process, in N local processes, or on a Ray cluster — and writes each
finished cell to ``DIR/cells/`` at once (atomically), then the tables:

- ``DIR/summary.csv``: one row per (cell, episode), rewritten after every finished cell;
- ``DIR/steps.csv``: one row per decision step; ``DIR/matrices.json``: the accuracy
  matrices; both written when the run ends (a resumed run rebuilds them from ``cells/``).

A killed run loses only the cells in flight; running the same command again skips the
finished ones. Cells of learned agents train a model (or reuse the one saved under ``DIR/models/`` for
the same scenario, overrides, seed and budget) and then evaluate it.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml
from tqdm.auto import tqdm

import agents
from agents.evaluate import run_episode
from analysis.summary import OVERRIDE_COLUMNS, capabilities, completed, scenario_fields, summarise
from analysis.sweep_config import Cell, ConfigError, load_config
from nsr_env.atomic import atomic_write, remove_orphaned_temporaries
from nsr_env.envs.nsr import NSREnv
from nsr_env.scenarios import env_id_of
from nsr_env.threads import one_torch_thread

TRAINING_SEED_OFFSET = 10_000  # training episodes never replay the evaluation episodes (seeded with the cell's seed)


# --- one cell ---------------------------------------------------------------------------------


def _agent_kwargs(cell: Cell, models: Path) -> dict:
    kwargs = dict(cell.agent_kwargs)
    agent = agents.AGENTS[cell.agent]
    if agent.needs_training:
        ppo = dict(cell.ppo)
        folder = models / cell.model_key
        path = folder / "model.zip"
        if not path.is_file():  # train once per scenario, overrides, seed and budget; reused on resume
            trained = agent.train(
                env_id_of(cell.scenario), ppo["timesteps"], folder.with_name(folder.name + ".partial"),
                seed=cell.seed + TRAINING_SEED_OFFSET, n_envs=ppo.get("n_envs", 1), env_kwargs=dict(cell.overrides),
                tensorboard=False, **(ppo.get("kwargs") or {}),
            )  # fmt: skip
            trained.parent.rename(folder)
        kwargs["path"] = path
    return kwargs


def run_cell(cell: Cell, models: str | Path) -> dict:
    """Run one cell: its episodes' steps, summary rows and accuracy matrices (a pure function of the cell)."""
    with one_torch_thread():
        env = NSREnv(cell.scenario, **dict(cell.overrides))
        controller = agents.make(cell.agent, env, seed=cell.seed, **_agent_kwargs(cell, Path(models)))
        scenario = env.scenario
        labels = {"cell": cell.id, **{column: getattr(scenario, column) for column in OVERRIDE_COLUMNS}}
        fields = scenario_fields(scenario)
        steps, summary, matrices = [], [], []
        for episode in range(cell.episodes):
            rows, matrix = run_episode(controller, env, cell.seed, episode)
            frame = pd.DataFrame(rows)
            steps.append(frame.assign(**labels))
            identity = {"cell": cell.id, "scenario": scenario.name, "agent": cell.agent, "seed": cell.seed}
            identity |= capabilities(cell.agent)
            summary.append({**identity, "episode": episode, **fields, **summarise(frame, matrix, scenario)})
            matrices.append(
                {"episode": episode, "phase_tasks": frame.groupby("phase").task.first().tolist(), "R": matrix.tolist()}
            )
        env.close()
    return {"cell": cell.id, "steps": pd.concat(steps, ignore_index=True), "summary": summary, "matrices": matrices}


# --- the run ------------------------------------------------------------------------------------


def _write_cell(out: Path, result: dict) -> dict:
    """Write a finished cell (steps first, then the JSON record that marks it done); returns the record."""
    cells = out / "cells"
    atomic_write(cells / f"{result['cell']}.steps.csv", lambda t: result["steps"].to_csv(t, index=False))
    record = {"summary": result["summary"], "matrices": result["matrices"]}
    atomic_write(cells / f"{result['cell']}.json", lambda t: t.write_text(json.dumps(record)))
    return record


def _read_records(out: Path, cells: list[Cell]) -> dict[str, dict]:
    """The records of the cells an earlier run finished, by cell id."""
    paths = {cell.id: out / "cells" / f"{cell.id}.json" for cell in cells}
    return {cell_id: json.loads(path.read_text()) for cell_id, path in paths.items() if path.is_file()}


def _write_summary(out: Path, cells: list[Cell], records: dict[str, dict]) -> None:
    rows = [
        completed(row, cell.agent, cell.scenario, dict(cell.overrides))
        for cell in cells
        if cell.id in records
        for row in records[cell.id]["summary"]
    ]
    atomic_write(out / "summary.csv", lambda t: pd.DataFrame(rows).to_csv(t, index=False))


def _write_steps_and_matrices(out: Path, cells: list[Cell], records: dict[str, dict]) -> None:
    done = [cell.id for cell in cells if cell.id in records]
    steps = pd.concat([pd.read_csv(out / "cells" / f"{cell_id}.steps.csv") for cell_id in done], ignore_index=True)
    atomic_write(out / "steps.csv", lambda t: steps.to_csv(t, index=False))
    matrices = {cell_id: records[cell_id]["matrices"] for cell_id in done}
    atomic_write(out / "matrices.json", lambda t: t.write_text(json.dumps(matrices)))


def run_sweep(
    config_path: str | Path,
    out: str | Path,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every unfinished cell of the config into ``out``; returns the summary table."""
    config = load_config(config_path)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: use 1 or more processes")
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend!r}: use 'local' or 'ray'")
    out = Path(out)
    _check_same_config(config.text, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", lambda t: t.write_text(config.text))
    remove_orphaned_temporaries(out)  # what a killed run was writing; its finished files are intact
    records = _read_records(out, config.cells)
    todo = [cell for cell in config.cells if cell.id not in records]
    if todo:  # the end-of-run tables of an earlier, interrupted run would be stale until this run ends
        for stale in ("steps.csv", "matrices.json"):
            (out / stale).unlink(missing_ok=True)
    models = out / "models"
    bar = tqdm(
        total=len(config.cells),
        initial=len(config.cells) - len(todo),
        desc=config.name,
        unit="cell",
        disable=not progress,
    )
    for result in _results(todo, models, jobs, backend, address):
        records[result["cell"]] = _write_cell(out, result)
        _write_summary(out, config.cells, records)
        bar.update()
    bar.close()
    _write_summary(out, config.cells, records)
    _write_steps_and_matrices(out, config.cells, records)
    return pd.read_csv(out / "summary.csv")


def collect_sweep(config_path: str | Path, out: str | Path) -> tuple[int, int]:
    """Write ``summary.csv``, ``steps.csv`` and ``matrices.json`` from the cells an unfinished (say, killed)
    run of the config has finished, running nothing, so that ``nsr report`` can read them; returns
    (finished cells, cells in the config). A later ``nsr sweep`` resumes the rest as usual."""
    config = load_config(config_path)
    out = Path(out)
    if not (out / "config.yaml").is_file():
        raise ConfigError(f"{out} holds no sweep (no config.yaml); run `nsr sweep {config_path} --out {out}` first")
    _check_same_config(config.text, out)
    records = _read_records(out, config.cells)
    if not records:
        raise ConfigError(f"{out} has no finished cells yet; let `nsr sweep {config_path} --out {out}` run longer")
    _write_summary(out, config.cells, records)
    _write_steps_and_matrices(out, config.cells, records)
    return len(records), len(config.cells)


def _check_same_config(text: str, out: Path) -> None:
    stored = out / "config.yaml"
    if stored.is_file() and yaml.safe_load(stored.read_text()) != yaml.safe_load(text):
        raise ConfigError(f"{out} holds the results of another config ({stored}); use a new --out, or the same config")


def _results(todo: list[Cell], models: Path, jobs: int, backend: str, address: str | None) -> Iterator[dict]:
    """Finished cells in completion order."""
    if backend == "ray":
        yield from _ray_results(todo, models, address)
    elif jobs == 1:
        for cell in todo:
            yield run_cell(cell, models)
    else:
        # fork: workers start with this process's imports (seconds saved per worker)
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(run_cell, cell, models): cell for cell in todo}
            failures = []
            for future in concurrent.futures.as_completed(futures):
                try:
                    result = future.result()
                except Exception as error:  # keep the other cells' results; report the failure at the end
                    failures.append((futures[future], error))
                    continue
                yield result
            if failures:
                cell, error = failures[0]
                raise RuntimeError(f"{len(failures)} cell(s) failed, the first {cell.id}: {error}") from error


def project_runtime_env() -> dict:
    """Ray's ``runtime_env`` that ships this project's packages (``nsr_env``, ``agents``, ``analysis``) to every
    worker of a cluster, so that nodes need only its dependencies installed, not a checkout."""
    import analysis
    import nsr_env

    return {"py_modules": [nsr_env, agents, analysis]}


def _ray_results(todo: list[Cell], models: Path, address: str | None) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'nsr-env[distributed]'") from None
    started_here = not ray.is_initialized()
    if started_here:  # on a cluster the project's code ships with the job; its dependencies must be on every node
        runtime_env = project_runtime_env() if address else None
        ray.init(address=address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    # a cell whose worker or node dies is run again elsewhere (twice at most); then the sweep stops, and a rerun
    # resumes it from the cells already written
    remote = ray.remote(num_cpus=1, max_retries=2)(run_cell)
    pending = [remote.remote(cell, str(models)) for cell in todo]
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started_here:
            ray.shutdown()
