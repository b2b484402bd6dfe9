"""Controllers: the registry, valid actions, the tidy evaluation table, behaviour on real data, PPO end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import agents
from analysis.cli import main as nsr
from nsr_env.envs import NSREnv

RULES = ["similarity", "fresh", "keep", "round_robin", "random", "oracle"]


def per_visit(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, phase): the visit's task and its final recovery steps (-1: never recovered)."""
    last = steps.groupby(["seed", "episode", "phase"]).tail(1)
    first_visit = ~last.duplicated(["seed", "episode", "task"])
    return last.assign(returning=~first_visit)


def test_the_registry_names_every_family():
    assert set(agents.AGENTS) == {*RULES, "probe", "ppo", "maskable_ppo", "recurrent_ppo"}
    env = gym.make("nsr_env/NSR-Synthetic-v0")
    with pytest.raises(ValueError, match="agent name 'smart' is unknown"):
        agents.make("smart", env)
    with pytest.raises(ValueError, match="threshold=2"):
        agents.make("similarity", env, threshold=2)
    with pytest.raises(ValueError, match="needs path="):
        agents.make("ppo", env)
    with pytest.raises(ValueError, match=r"path='/nowhere/model\.zip': no saved model there"):
        agents.make("maskable_ppo", env, path="/nowhere/model.zip")


@pytest.mark.parametrize("name", RULES)
def test_every_rule_sends_only_valid_actions(name):
    env = gym.make("nsr_env/NSR-Synthetic-v0", strict=True, cycles=2)  # strict: a masked action would raise
    controller = agents.make(name, env, seed=0)
    controller.reset()
    observation, info = env.reset(seed=0)
    done = False
    while not done:
        observation, _, done, _, info = env.step(controller.act(observation, info))
    assert info["bank_size"] >= 1


def test_evaluate_returns_one_tidy_row_per_decision_step_and_is_deterministic():
    steps = agents.evaluate("random", "nsr_env/NSR-Synthetic-v0", seeds=[0, 1], episodes=2, cycles=1)
    assert list(steps.columns) == [*agents.COLUMNS, "recalled_task"]
    scenario = NSREnv("synthetic", cycles=1).scenario
    assert len(steps) == 2 * 2 * scenario.num_steps
    assert steps.groupby(["seed", "episode"]).step.max().eq(scenario.num_steps - 1).all()
    assert steps.task_boundary.sum() == 2 * 2 * scenario.num_phases
    again = agents.evaluate("random", "nsr_env/NSR-Synthetic-v0", seeds=[0, 1], episodes=2, cycles=1)
    pd.testing.assert_frame_equal(steps, again)
    assert (
        not steps[steps.seed == 0]
        .regret.reset_index(drop=True)
        .equals(steps[steps.seed == 1].regret.reset_index(drop=True))
    )


@pytest.fixture(scope="module")
def default_runs():
    """The rule controllers on the real default scenario, two cycles (features from the user's cache)."""
    return {
        name: agents.evaluate(name, "nsr_env/NSR-v0", seeds=[0], cycles=2) for name in ("similarity", "fresh", "oracle")
    }


def test_similarity_recovers_returning_tasks_at_once_and_fresh_relearns(default_runs):
    L = NSREnv("default").scenario.phase_length

    def mean_returning_recovery(steps):
        visits = per_visit(steps)
        returning = visits[visits.returning].recovery_steps
        return returning.where(returning >= 0, L + 1).mean()  # never recovered: counted at L + 1

    similarity, fresh = (mean_returning_recovery(default_runs[name]) for name in ("similarity", "fresh"))
    assert similarity <= 1
    assert fresh >= 5 * max(similarity, 0.2), (similarity, fresh)


def test_the_oracle_has_no_more_regret_than_similarity(default_runs):
    oracle, similarity = (default_runs[name].regret.sum() for name in ("oracle", "similarity"))
    assert oracle <= similarity + 1e-9
    assert default_runs["fresh"].regret.sum() > similarity


def test_maskable_ppo_trained_briefly_on_synthetic_recalls_candidate_0_on_returns_and_beats_random(tmp_path):
    class Threads(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[int] = set()

        def _on_step(self) -> bool:
            self.seen.add(torch.get_num_threads())
            return True

    before, threads = torch.get_num_threads(), Threads()
    torch.set_num_threads(2)
    try:
        path = agents.ppo.train_ppo(
            "nsr_env/NSR-Synthetic-v0", 10_000, tmp_path, seed=0, tensorboard=False, callback=threads
        )
        assert threads.seen == {1} and torch.get_num_threads() == 2  # one thread inside, restored after
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "normalization.npz").is_file()  # the recipe normalises observations
    seeds = [100, 101, 102]
    ppo = agents.evaluate("maskable_ppo", "nsr_env/NSR-Synthetic-v0", seeds, agent_kwargs={"path": path})
    random = agents.evaluate("random", "nsr_env/NSR-Synthetic-v0", seeds)
    assert ppo.regret.sum() < random.regret.sum(), (ppo.regret.sum(), random.regret.sum())
    returns = ppo[ppo.task_boundary & (ppo.phase >= 4)]  # synthetic: 4 tasks a cycle, never evicted
    chance = (1 / (2 + returns.bank_size.clip(upper=8))).mean()  # fresh, keep or one of the candidates
    assert (returns.recall == 2).mean() > chance + 0.3, ((returns.recall == 2).mean(), chance)


def test_nsr_train_ppo_saves_a_controller_that_loads_and_acts(tmp_path, capsys):
    out = tmp_path / "run"
    code = nsr(
        ["train-ppo", "--env", "nsr_env/NSR-Synthetic-v0", "--timesteps", "256", "--out", str(out), "--no-progress",
         "--set", "cycles=2"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "maskable_ppo: cumulative regret" in printed and "similarity: cumulative regret" in printed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (out / "tensorboard").rglob("events.out.tfevents.*")
    logged = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"cl/cumulative_regret", "cl/mean_accuracy", "cl/mean_recovery_steps"} <= set(logged)
    assert {"model.zip", "config.json", "tensorboard", "checkpoints", "best"} <= {p.name for p in out.iterdir()}
    env = gym.make("nsr_env/NSR-Synthetic-v0", cycles=2)
    controller = agents.make("maskable_ppo", env, path=out / "model.zip")  # the default agent of train-ppo
    observation, info = env.reset(seed=0)
    action = controller.act(observation, info)
    assert env.action_space.contains(np.asarray(action))
    with pytest.raises(ValueError, match="train it on the same slots and bank_capacity"):
        agents.make("maskable_ppo", gym.make("nsr_env/NSR-Synthetic-v0", slots=3), path=out / "model.zip")
    with pytest.raises(ValueError, match=r"holds a maskable_ppo model .* agents.make\('maskable_ppo'"):
        agents.make("ppo", env, path=out / "model.zip")
    assert nsr(["train-ppo", "--timesteps", "10", "--out", str(tmp_path / "x"), "--set", "cycle=2"]) == 2
    assert "has no field 'cycle'" in capsys.readouterr().err


def test_recurrent_ppo_trains_saves_and_acts_with_its_state(tmp_path, capsys):
    out = tmp_path / "recurrent"
    assert nsr(["train-ppo", "--env", "nsr_env/NSR-Synthetic-v0", "--timesteps", "256", "--out", str(out),
                "--no-progress", "--recurrent", "--set", "cycles=1"]) == 0  # fmt: skip
    assert "trained recurrent_ppo" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["agent"] == "recurrent_ppo"
    steps = agents.evaluate(
        "recurrent_ppo", "nsr_env/NSR-Synthetic-v0", seeds=[3], agent_kwargs={"path": out / "model.zip"}, cycles=1
    )
    assert len(steps) == NSREnv("synthetic", cycles=1).scenario.num_steps


def test_a_reused_controller_is_attached_to_each_new_environment():
    oracle = agents.make("oracle", gym.make("nsr_env/NSR-Synthetic-v0", slots=3))
    steps = agents.evaluate(oracle, "nsr_env/NSR-Synthetic-v0", seeds=[0, 1], cycles=2, strict=True)
    assert len(steps) == 2 * NSREnv("synthetic", cycles=2).scenario.num_steps
    assert oracle.slots == 2 and oracle.env.scenario.cycles == 2


def test_train_ppo_names_the_learned_agents_when_given_another(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"agent='oracle' is not a learned agent; choose one of \['maskable_ppo', 'ppo', 'recurrent_ppo'\]",
    ):
        agents.ppo.train_ppo("nsr_env/NSR-Synthetic-v0", 64, tmp_path, agent="oracle")
    assert not (tmp_path / "model.zip").exists()
