"""The README's code must run as shown: its stream example is executed here on the real default scenario."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_core_stream_example_runs_and_recalled_returns_recover_at_once(capsys):
    namespace: dict = {}
    exec(python_block_after("## The core: a cyclic stream in a few lines"), namespace)
    scenario, steps, R = namespace["scenario"], namespace["steps"], np.array(namespace["R"])
    assert R.shape == (scenario.num_phases, scenario.tasks_per_cycle)
    first_cycle, returns = steps[: scenario.tasks_per_cycle], steps[scenario.tasks_per_cycle :]
    assert first_cycle.min() >= 1 and returns.max() <= 1
    out = capsys.readouterr().out
    assert "ACC 0.9" in out
    documented = re.search(r"# (\[[\d ]+\])", python_block_after("## The core: a cyclic stream in a few lines"))
    printed = re.search(r"recovery steps per phase: (\[[\d ]+\])", out)
    assert printed[1].split() == documented[1].split() or printed[1][1:-1].split() == documented[1][1:-1].split()


def test_the_environment_example_runs(capsys):
    namespace: dict = {}
    exec(python_block_after("## The environment and its controllers"), namespace)
    assert namespace["done"] and namespace["steps"].agent.eq("fresh").all()
    assert len(namespace["steps"]) == 2 * namespace["env"].unwrapped.scenario.num_steps
    assert "[" in capsys.readouterr().out
