"""One definition per measure: the environment, the sweep's summary, the PPO logger and analysis.metrics
agree on recovery steps (with censoring), regret and retrieval precision for the same real episode."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

import agents
from agents.evaluate import run_episode
from agents.ppo import ContinualLearningLogger
from analysis import metrics
from analysis.summary import summarise
from nsr_env import measures


class Recorder:
    """Stands in for SB3's logger: keeps what record_mean receives."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def record_mean(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)


@pytest.fixture(scope="module", params=["oracle", "fresh", "random"])
def episode(request):
    """A real SYNTHETIC episode (3 cycles, short phases so some visits are censored), with the accuracy
    of each visit before its first training step, read by wrapping the learner's begin_phase."""
    env = gym.make("nsr_env/NSR-Synthetic-v0", cycles=3, phase_length=4)
    controller = agents.make(request.param, env, seed=3)
    inner = env.unwrapped
    before: list[float] = []
    infos: list[dict] = []
    step = env.step

    def recording_step(action):
        boundary, task = inner.at_boundary, inner.current_task
        if boundary:
            begin = inner.learner.begin_phase

            def spy(*args):
                begin(*args)
                before.append(inner.learner.evaluate(task).accuracy)
                inner.learner.begin_phase = begin

            inner.learner.begin_phase = spy
        result = step(action)
        infos.append(result[4])
        return result

    env.step = recording_step
    rows, matrix = run_episode(controller, env, seed=5)
    return SimpleNamespace(env=env, inner=inner, rows=pd.DataFrame(rows), matrix=matrix, before=before, infos=infos)


def test_recovery_steps_agree_everywhere(episode):
    inner, frame = episode.inner, episode.rows
    L, tolerance = inner.scenario.phase_length, inner.scenario.tolerance
    phases = frame.groupby("phase")
    tasks = phases.task.first().to_numpy()
    curves = np.array([[b, *group.accuracy] for b, (_, group) in zip(episode.before, phases, strict=True)])
    best: dict[int, float] = {}
    targets = []
    for task, curve in zip(tasks, curves, strict=True):
        targets.append(min(inner.data.reference[task], best[task]) if task in best else inner.data.reference[task])
        best[task] = max(best.get(task, 0.0), curve[1:].max())
    expected, censored = metrics.recovery_steps(curves, targets, tolerance)

    from_env = measures.censored_recovery(phases.tail(1).recovery_steps.to_numpy(), L)
    assert from_env.tolist() == expected.tolist()
    returning = measures.returning(tasks)
    assert returning.any()
    summary = summarise(frame, episode.matrix, inner.scenario)
    assert summary["mean_recovery_steps"] == pytest.approx(expected[returning].mean())
    assert summary["censored_visits"] == int(censored[returning].sum())

    logger = ContinualLearningLogger()
    recorder = Recorder()
    logger.init_callback(SimpleNamespace(logger=recorder, get_env=lambda: DummyVecEnv([lambda: episode.env])))
    logger._on_training_start()
    for index, info in enumerate(episode.infos):
        logger.locals = {"infos": [info], "dones": [index == len(episode.infos) - 1]}
        logger._on_step()
    assert recorder.values["cl/mean_recovery_steps"] == [pytest.approx(expected[returning].mean())]
    assert recorder.values["cl/cumulative_regret"] == [pytest.approx(frame.regret.sum())]


def test_regret_and_precision_agree_everywhere(episode):
    inner, frame = episode.inner, episode.rows
    reference = inner.data.reference[frame.task.to_numpy()]
    assert frame.regret.to_numpy() == pytest.approx(metrics.step_regret(frame.accuracy, reference))
    summary = summarise(frame, episode.matrix, inner.scenario)
    assert summary["cumulative_regret"] == pytest.approx(metrics.cumulative_regret(frame.accuracy, reference)[-1])
    boundary = frame[frame.task_boundary]
    expected = metrics.retrieval_precision(boundary.recalled_task, boundary.task)
    assert summary["retrieval_precision"] == pytest.approx(expected, nan_ok=True)


def test_censoring_counts_a_visit_that_never_recovers_as_length_plus_one():
    curve = [0.1, 0.2, 0.3]  # L = 2 steps after the set-up, never within 0.03 of 0.9
    steps, censored = metrics.recovery_steps(curve, 0.9, 0.03)
    assert steps.tolist() == [3] and censored.tolist() == [True]
    assert measures.censored_recovery([measures.NOT_RECOVERED, 0, 2], 2).tolist() == [3, 0, 2]
    assert measures.returning_recovery([0, 1, 0, 1], [5, 1, -1, 0], 2).tolist() == [3, 0]
