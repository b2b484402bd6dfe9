"""The ablation sweep: agents x seeds x scenarios x scenario overrides, one pure function per cell.

A config (YAML) names the grid; :func:`run_sweep` runs the cells that are not finished
yet — in this process, in N local processes, or on a Ray cluster — and writes each
finished cell to ``DIR/cells/`` at once (atomically), then the tables:

- ``DIR/summary.csv``: one row per (cell, episode), rewritten after every finished cell;
- ``DIR/steps.csv``: one row per decision step; ``DIR/matrices.json``: the accuracy
  matrices; both written when the run ends (a resumed run rebuilds them from ``cells/``).

A killed run loses only the cells in flight; running the same command again skips the
finished ones. PPO cells train a model (or reuse the one saved under ``DIR/models/`` for
the same scenario, overrides, seed and budget) and then evaluate it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import inspect
import itertools
import json
import multiprocessing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from stable_baselines3 import PPO
from tqdm.auto import tqdm

import agents
from agents.evaluate import run_episode
from analysis.metrics import average_accuracy, backward_transfer, forgetting, retrieval_precision
from nsr_env.atomic import atomic_write, remove_orphaned_temporaries
from nsr_env.envs import ENV_IDS, NSREnv
from nsr_env.scenarios import FIELDS, SCENARIOS, make_scenario

CONFIG_KEYS = {"name", "scenarios", "agents", "seeds", "episodes", "agent_kwargs", "ppo"}
PPO_KEYS = {"timesteps", "n_envs", "kwargs"}
PPO_AGENTS = {"ppo", "maskable_ppo"}
PPO_TRAINING_SEED_OFFSET = (
    10_000  # training episodes never replay the evaluation episodes (seeded with the cell's seed)
)
OVERRIDE_COLUMNS = ["tasks_per_cycle", "cycles", "phase_length", "slots", "rank", "bank_capacity"]
"""The scenario fields every step row carries (the summary carries all of them)."""
SCENARIO_COLUMNS = [name for name in FIELDS if name not in ("name", "description")]


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the key."""


@dataclass(frozen=True)
class Cell:
    """One unit of work: an agent on one scenario (with overrides) for one seed."""

    agent: str
    scenario: str
    overrides: tuple[tuple[str, object], ...]
    seed: int
    episodes: int = 1
    agent_kwargs: tuple[tuple[str, object], ...] = ()
    ppo: tuple[tuple[str, object], ...] = ()

    @property
    def id(self) -> str:
        spec = json.dumps(asdict(self), sort_keys=True, default=str)
        shown = "-".join(f"{key}{value}" for key, value in self.overrides)
        return f"{self.agent}-{self.scenario}-{shown}-s{self.seed}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"

    @property
    def model_key(self) -> str:
        """What a trained PPO model depends on (not the episodes to evaluate)."""
        spec = [self.agent, self.scenario, self.overrides, self.seed, self.ppo]
        return hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]


@dataclass
class SweepConfig:
    name: str
    cells: list[Cell] = field(default_factory=list)
    text: str = ""


# --- the config ---------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _no_unknown(mapping: dict, allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"config key '{prefix}{unknown[0]}' is unknown; keys there: {', '.join(sorted(allowed))}")


def _check_arguments(function, kwargs: dict, key: str, skip: int, reserved: set[str]) -> None:
    """Keyword arguments that ``function`` accepts (after its first ``skip`` positional ones and
    without the ``reserved`` ones, which the sweep sets itself), or one ConfigError."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - reserved
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
    unknown = sorted(set(kwargs) - accepted if not takes_any else set(kwargs) & reserved)
    if unknown:
        raise ConfigError(
            f"config key '{key}.{unknown[0]}' is not an argument; accepted: {', '.join(sorted(accepted))}"
        )


def _int_list(value, key: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    _require(
        bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values),
        f"config key {key!r} must be an integer or a non-empty list of integers, got {value!r}",
    )
    return values


def load_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config: every problem stops here, before any work, naming its key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see configs/ for examples")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    _require(isinstance(raw, dict), f"config file {str(path)!r} must hold a mapping of keys")
    _no_unknown(raw, CONFIG_KEYS, "")
    for key in ("scenarios", "agents", "seeds"):
        _require(key in raw, f"config key {key!r} is missing")
    names = raw["agents"] if isinstance(raw["agents"], list) else [raw["agents"]]
    _require(bool(names), "config key 'agents' must name at least one agent")
    _require(len(set(names)) == len(names), f"config key 'agents' lists an agent twice: {names}")
    for name in names:
        _require(
            name in agents.AGENTS, f"config key 'agents': {name!r} is not an agent; known: {sorted(agents.AGENTS)}"
        )
    seeds = _int_list(raw["seeds"], "seeds")
    _require(len(set(seeds)) == len(seeds), f"config key 'seeds' lists a seed twice: {seeds}")
    episodes = raw.get("episodes", 1)
    _require(
        isinstance(episodes, int) and episodes >= 1, f"config key 'episodes' must be an integer >= 1, got {episodes!r}"
    )
    agent_kwargs = raw.get("agent_kwargs") or {}
    _require(isinstance(agent_kwargs, dict), "config key 'agent_kwargs' must map agent names to keyword arguments")
    for name, kwargs in agent_kwargs.items():
        _require(name in names, f"config key 'agent_kwargs.{name}': {name!r} is not one of this config's agents")
        _require(isinstance(kwargs, dict), f"config key 'agent_kwargs.{name}' must be a mapping of keyword arguments")
        _check_arguments(agents.AGENTS[name].__init__, kwargs, f"agent_kwargs.{name}", 2, {"seed", "path", "model"})
    ppo = raw.get("ppo") or {}
    _require(isinstance(ppo, dict), "config key 'ppo' must be a mapping (timesteps, n_envs, kwargs)")
    _no_unknown(ppo, PPO_KEYS, "ppo.")
    if PPO_AGENTS & set(names):
        _require("timesteps" in ppo, "config key 'ppo.timesteps' is missing: PPO agents train before they evaluate")
    ppo_kwargs = ppo.get("kwargs") or {}
    _require(isinstance(ppo_kwargs, dict), "config key 'ppo.kwargs' must be a mapping of (Maskable)PPO arguments")
    reserved = {"seed", "device", "verbose", "tensorboard_log", "env", "policy"}
    _check_arguments(PPO.__init__, ppo_kwargs, "ppo.kwargs", 3, reserved)
    for key in ("timesteps", "n_envs"):
        value = ppo.get(key, 1)
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"config key 'ppo.{key}' must be an integer >= 1, got {value!r}",
        )
    scenarios = raw["scenarios"]
    _require(isinstance(scenarios, list) and scenarios, "config key 'scenarios' must be a non-empty list")
    cells = []
    for index, entry in enumerate(scenarios):
        where = f"scenarios[{index}]"
        _require(isinstance(entry, dict) and "scenario" in entry, f"config key {where!r} needs a 'scenario' name")
        _no_unknown(entry, {"scenario", "grid", "agents"}, f"{where}.")
        entry_agents = entry.get("agents", names)
        entry_agents = entry_agents if isinstance(entry_agents, list) else [entry_agents]
        for agent in entry_agents:
            _require(agent in names, f"config key '{where}.agents': {agent!r} is not in the config's 'agents' list")
        name = entry["scenario"]
        _require(
            name in SCENARIOS, f"config key '{where}.scenario': {name!r} is not a scenario; known: {sorted(SCENARIOS)}"
        )
        grid = entry.get("grid") or {}
        _require(isinstance(grid, dict), f"config key '{where}.grid' must map scenario fields to lists of values")
        for key, values in grid.items():
            _require(key in FIELDS and key != "name", f"config key '{where}.grid.{key}' is not a scenario field")
            _require(values != [], f"config key '{where}.grid.{key}' is an empty list: give at least one value")
        axes = [
            [(key, value) for value in (values if isinstance(values, list) else [values])]
            for key, values in grid.items()
        ]
        for overrides in itertools.product(*axes):
            try:
                make_scenario(name, **dict(overrides))
            except ValueError as error:
                raise ConfigError(f"config key '{where}.grid': {error}") from None
            for agent, seed in itertools.product(entry_agents, seeds):
                cells.append(
                    Cell(
                        agent=agent,
                        scenario=name,
                        overrides=tuple(sorted(overrides)),
                        seed=seed,
                        episodes=episodes,
                        agent_kwargs=tuple(sorted((agent_kwargs.get(agent) or {}).items())),
                        ppo=tuple(sorted(ppo.items())) if agent in PPO_AGENTS else (),
                    )
                )
    return SweepConfig(name=raw.get("name", path.stem), cells=cells, text=text)


# --- one cell ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Cells run on one thread each, so results do not depend on how many ran at once."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _env_id(scenario: str) -> str:
    return next(env_id for env_id, name in ENV_IDS.items() if name == scenario)


def _agent_kwargs(cell: Cell, models: Path) -> dict:
    kwargs = dict(cell.agent_kwargs)
    if cell.agent in PPO_AGENTS:
        ppo = dict(cell.ppo)
        folder = models / cell.model_key
        path = folder / "model.zip"
        if not path.is_file():  # train once per scenario, overrides, seed and budget; reused on resume
            trained = agents.ppo.train_ppo(
                _env_id(cell.scenario), ppo["timesteps"], folder.with_name(folder.name + ".partial"),
                seed=cell.seed + PPO_TRAINING_SEED_OFFSET,
                n_envs=ppo.get("n_envs", 1), maskable=cell.agent == "maskable_ppo", env_kwargs=dict(cell.overrides),
                tensorboard=False, **(ppo.get("kwargs") or {}),
            )  # fmt: skip
            trained.parent.rename(folder)
        kwargs["path"] = path
    return kwargs


def summarise(steps: pd.DataFrame, matrix: np.ndarray, scenario) -> dict:
    """The per-episode row of ``summary.csv`` from one episode's steps and accuracy matrix."""
    L = scenario.phase_length
    phases = steps.groupby("phase")
    phase_tasks = phases.task.first().to_numpy()
    last = phases.tail(1)
    returning = pd.Series(phase_tasks).duplicated().to_numpy()
    recovery = last.recovery_steps.to_numpy()
    censored = recovery < 0
    returning_recovery = np.where(censored, L + 1, recovery)[returning]
    phase_regret = phases.regret.sum().to_numpy()
    boundary = steps[steps.task_boundary]
    recalls = boundary[boundary.recall >= 2]
    final = steps.iloc[-1]
    return {
        "returning_visits": int(returning.sum()),
        "cumulative_regret": float(steps.regret.sum()),
        "mean_recovery_steps": float(returning_recovery.mean()) if returning.any() else float("nan"),
        "censored_visits": int((censored & returning).sum()),
        "acc": average_accuracy(matrix, phase_tasks),
        "bwt": backward_transfer(matrix, phase_tasks),
        "forgetting": forgetting(matrix, phase_tasks),
        "bytes_per_task": float(final.bank_bytes / final.bank_size) if final.bank_size else float("nan"),
        "retrieval_precision": retrieval_precision(recalls.recalled_task, recalls.task)
        if len(recalls)
        else float("nan"),
        "first_visit_regret": float(phase_regret[~returning].mean()),
    }


def run_cell(cell: Cell, models: str | Path) -> dict:
    """Run one cell: its episodes' steps, summary rows and accuracy matrices (a pure function of the cell)."""
    with _one_torch_thread():
        env = NSREnv(cell.scenario, **dict(cell.overrides))
        controller = agents.make(cell.agent, env, seed=cell.seed, **_agent_kwargs(cell, Path(models)))
        scenario = env.scenario
        labels = {"cell": cell.id, **{column: getattr(scenario, column) for column in OVERRIDE_COLUMNS}}
        fields = _scenario_fields(scenario)
        steps, summary, matrices = [], [], []
        for episode in range(cell.episodes):
            rows, matrix = run_episode(controller, env, cell.seed, episode)
            frame = pd.DataFrame(rows)
            steps.append(frame.assign(**labels))
            identity = {"cell": cell.id, "scenario": scenario.name, "agent": cell.agent, "seed": cell.seed}
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


def _scenario_fields(scenario) -> dict:
    return {column: getattr(scenario, column) for column in SCENARIO_COLUMNS}


def _with_scenario_fields(row: dict, cell: Cell) -> dict:
    """``row`` with every scenario field: records written before the summary carried them all lack some."""
    if all(column in row for column in SCENARIO_COLUMNS):
        return row
    return _scenario_fields(make_scenario(cell.scenario, **dict(cell.overrides))) | row


def _write_summary(out: Path, cells: list[Cell], records: dict[str, dict]) -> None:
    rows = [
        _with_scenario_fields(row, cell) for cell in cells if cell.id in records for row in records[cell.id]["summary"]
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
    stored = out / "config.yaml"
    if stored.is_file() and yaml.safe_load(stored.read_text()) != yaml.safe_load(config.text):
        raise ConfigError(f"{out} holds the results of another config ({stored}); use a new --out, or the same config")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(stored, lambda t: t.write_text(config.text))
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


def _ray_results(todo: list[Cell], models: Path, address: str | None) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'nsr-env[distributed]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(run_cell)
    pending = [remote.remote(cell, str(models)) for cell in todo]
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started_here:
            ray.shutdown()
