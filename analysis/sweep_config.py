"""Sweep configs: the YAML schema, checked before any work, and the grid of cells it names.

A config names ``agents`` x ``seeds`` x ``scenarios`` (each scenario with a ``grid`` of field
overrides, crossed, and optionally its own subset of the agents), ``episodes`` per cell,
``agent_kwargs`` per agent and the ``ppo`` training budget of the agents that train. Every
problem raises one :class:`ConfigError` naming its key.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from stable_baselines3 import PPO

import agents
from nsr_env.scenarios import FIELDS, SCENARIOS, make_scenario

CONFIG_KEYS = {"name", "scenarios", "agents", "seeds", "episodes", "agent_kwargs", "ppo"}
PPO_KEYS = {"timesteps", "n_envs", "kwargs"}


def trains(agent: str) -> bool:
    """Whether a registered agent is a learned controller that the sweep trains before it evaluates."""
    return agents.AGENTS[agent].needs_training


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
    if any(trains(name) for name in names):
        _require("timesteps" in ppo, "config key 'ppo.timesteps' is missing: learned agents train before they evaluate")
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
                        ppo=tuple(sorted(ppo.items())) if trains(agent) else (),
                    )
                )
    return SweepConfig(name=raw.get("name", path.stem), cells=cells, text=text)
