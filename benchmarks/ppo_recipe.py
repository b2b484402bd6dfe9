"""The learning curves behind `nsr train-ppo`'s defaults: (Maskable)PPO variants on the candidate interface.

Trains each variant on the default scenario (observed keys, 5 tasks x 3 cycles on 2 slots, 600 steps per
episode) and, every --every training steps, runs the deterministic policy for one episode on each
evaluation seed (never a training seed) and records its cumulative regret, its mean recovery steps over
returning visits and its retrieval precision, beside the similarity rule's on the same seeds. Writes
OUT/curves.csv and OUT/curves.png and prints the last evaluation of each variant, with wall time.

    python benchmarks/ppo_recipe.py [--timesteps 60000] [--every 5000] [--variants recipe sb3 ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from machine import machine_line
from matplotlib.figure import Figure
from stable_baselines3.common.callbacks import BaseCallback

import agents
from agents.ppo import RECIPE, ObservationNormalizer, train_ppo
from nsr_env import measures
from nsr_env.scenarios import make_scenario

ENV_ID = "nsr_env/NSR-v0"
EVALUATION_SEEDS = (1000, 1001)
SB3_DEFAULTS = {"n_steps": 2048, "batch_size": 64, "ent_coef": 0.0, "learning_rate": 3e-4, "normalize": False}
VARIANTS = {
    "recipe": {},
    "sb3 defaults": SB3_DEFAULTS,
    "raw observations": {"normalize": False},
    "entropy bonus 0.01": {"ent_coef": 0.01},
    "n_steps 2048": {"n_steps": 2048},
    "plain PPO": {"agent": "ppo"},
    "RecurrentPPO": {"agent": "recurrent_ppo"},
}
"""Each variant: the recipe (agents.ppo.RECIPE) with these changes."""


def episode_figures(steps: pd.DataFrame, phase_length: int) -> dict[str, float]:
    """Cumulative regret, mean returning-visit recovery (censored) and retrieval precision of one episode."""
    phases = steps.groupby("phase")
    recovery = measures.returning_recovery(phases.task.first(), phases.recovery_steps.last(), phase_length)
    boundary = steps[steps.task_boundary]
    recalls = boundary[boundary.recall >= 2]
    return {
        "regret": float(steps.regret.sum()),
        "recovery": float(recovery.mean()) if recovery.size else float("nan"),
        "precision": measures.retrieval_precision(recalls.recalled_task, recalls.task),
    }


def evaluate(name: str, agent_kwargs: dict) -> dict[str, float]:
    """Mean over the evaluation seeds of :func:`episode_figures`."""
    phase_length = make_scenario("default").phase_length
    rows = []
    for seed in EVALUATION_SEEDS:
        steps = agents.evaluate(name, ENV_ID, seeds=[seed], agent_kwargs=agent_kwargs)
        rows.append(episode_figures(steps, phase_length))
    return pd.DataFrame(rows).mean().to_dict()


class Curve(BaseCallback):
    """Evaluates the policy being trained every ``every`` steps (the time it takes is left out of the clock)."""

    def __init__(self, variant: str, agent: str, every: int, rows: list[dict]) -> None:
        super().__init__()
        self.variant, self.agent, self.every, self.rows = variant, agent, every, rows
        self.next, self.started, self.paused = every, time.perf_counter(), 0.0

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            self.record()
        return True

    def record(self) -> None:
        tick = time.perf_counter()
        venv = self.model.get_vec_normalize_env()
        normalizer = None if venv is None else ObservationNormalizer.of(venv)
        figures = evaluate(self.agent, {"model": self.model, "normalizer": normalizer})
        elapsed = tick - self.started - self.paused
        self.rows.append({"variant": self.variant, "steps": self.num_timesteps, "seconds": elapsed, **figures})
        self.paused += time.perf_counter() - tick


def figure(curves: pd.DataFrame, baseline: dict[str, float]) -> Figure:
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for variant, curve in curves.groupby("variant", sort=False):
        for axis, column in zip(axes, ("regret", "recovery", "precision"), strict=True):
            axis.plot(curve["steps"], curve[column], marker="o", markersize=3, label=variant)
    for axis, column, label in zip(axes, ("regret", "recovery", "precision"), (
        "cumulative regret (evaluation episodes)", "recovery steps, returning visits", "retrieval precision"
    ), strict=True):  # fmt: skip
        axis.axhline(baseline[column], color="0.3", linestyle="--", linewidth=1, label="similarity rule")
        axis.set(xlabel="training steps", title=label)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(f"MaskablePPO recipe variants on {ENV_ID}, evaluation seeds {list(EVALUATION_SEEDS)}")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=60_000)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--out", default="results/ppo_recipe")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    baseline = evaluate("similarity", {})
    print(f"similarity rule: regret {baseline['regret']:.2f}, recovery {baseline['recovery']:.2f}")
    rows: list[dict] = []
    for variant in args.variants:
        settings = {**RECIPE, **VARIANTS[variant]}
        agent = settings.pop("agent", "maskable_ppo")
        started = time.perf_counter()
        train_ppo(
            ENV_ID, args.timesteps, out / variant.replace(" ", "_"), seed=args.seed, agent=agent,
            tensorboard=False, callback=Curve(variant, agent, args.every, rows), **settings,
        )  # fmt: skip
        last = rows[-1]
        print(
            f"{variant}: {args.timesteps:,} steps in {time.perf_counter() - started:.0f} s; at the end regret "
            f"{last['regret']:.2f}, recovery {last['recovery']:.2f}, precision {last['precision']:.2f}"
        )
    curves = pd.DataFrame(rows)
    curves.to_csv(out / "curves.csv", index=False)
    figure(curves, baseline).savefig(out / "curves.png", dpi=120)
    print(f"wrote {out / 'curves.csv'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
