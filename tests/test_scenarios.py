"""Scenarios: the registry, schedules, validation, cached reference accuracies, and the default's calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nsr_env.learner import FRESH
from nsr_env.scenarios import SCENARIOS, Scenario, make_scenario, prepare


def test_registry_has_the_named_scenarios_with_their_schedules():
    assert {"default", "five_datasets", "split_cifar100", "synthetic"} <= set(SCENARIOS)
    default = SCENARIOS["default"]
    assert default.schedule == "cyclic" and default.slots < default.tasks_per_cycle and not default.online
    assert SCENARIOS["five_datasets"].schedule == "sequential" and SCENARIOS["five_datasets"].online
    assert SCENARIOS["split_cifar100"].schedule == "cyclic" and SCENARIOS["split_cifar100"].online
    assert "SYNTHETIC" in SCENARIOS["synthetic"].description


def test_overrides_replace_fields_by_name_and_leave_the_registry_alone():
    scenario = make_scenario("default", tasks_per_cycle=3, cycles=2, phase_length=7, slots=1, rank=2, bank_capacity=4)
    assert (scenario.tasks_per_cycle, scenario.cycles, scenario.phase_length) == (3, 2, 7)
    assert (scenario.slots, scenario.rank, scenario.bank_capacity) == (1, 2, 4)
    assert scenario.num_steps == 3 * 2 * 7
    assert SCENARIOS["default"].cycles != 2 or SCENARIOS["default"].slots != 1


def test_cyclic_and_sequential_schedules():
    assert make_scenario("default", tasks_per_cycle=3, cycles=2).phase_tasks().tolist() == [0, 1, 2, 0, 1, 2]
    assert make_scenario("five_datasets").phase_tasks().tolist() == [0, 1, 2, 3, 4]


def test_random_recurrence_is_seeded_introduces_every_task_and_never_repeats_at_once():
    scenario = make_scenario("default", schedule="random", tasks_per_cycle=4, cycles=6)
    first = scenario.phase_tasks(np.random.default_rng(1))
    assert first.tolist() == scenario.phase_tasks(np.random.default_rng(1)).tolist()
    assert first.tolist() != scenario.phase_tasks(np.random.default_rng(2)).tolist()
    assert first[:4].tolist() == [0, 1, 2, 3] and len(first) == 24
    assert np.all(first[1:] != first[:-1])
    assert set(np.bincount(first[4:], minlength=4)) != {0}
    with pytest.raises(ValueError, match="rng="):
        scenario.phase_tasks()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"slots": 0}, "slots=0"),
        ({"cycles": 2.5}, "cycles=2.5"),
        ({"phase_length": True}, "phase_length=True"),
        ({"train_per_class": 0}, "train_per_class=0"),
        ({"schedule": "zigzag"}, "schedule='zigzag'"),
        ({"svd_energy": 1.5}, "svd_energy=1.5"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"slot": 2}, "no field 'slot'"),
        ({"data_seed": -1}, "data_seed=-1"),
        ({"retention": "mru"}, "retention='mru'"),
        ({"distill_weight": -0.5}, "distill_weight=-0.5"),
        ({"tolerance": 0.0}, "tolerance=0.0"),
    ],
)
def test_invalid_parameters_raise_one_value_error_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_scenario("default", **overrides)


def test_unknown_names_and_impossible_sizes_are_named(tmp_path):
    with pytest.raises(ValueError, match="scenario name 'defualt' is unknown"):
        make_scenario("defualt")
    with pytest.raises(ValueError, match="set cycles=1"):
        make_scenario("five_datasets", cycles=2)
    with pytest.raises(ValueError, match="source='imagenet'"):
        Scenario("mine", "imagenet")
    with pytest.raises(ValueError, match="rank=17 is larger than the adapted layer allows"):
        prepare(make_scenario("synthetic", rank=17), cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="tasks_per_cycle=6 but the source 'split_fashion_mnist' has 5 tasks"):
        prepare(make_scenario("default", tasks_per_cycle=6), cache=tmp_path, progress=False)


def test_reference_accuracies_are_calibrated_once_and_cached_on_disk(tmp_path):
    scenario = make_scenario("synthetic", calibration_steps=20)
    first = prepare(scenario, cache=tmp_path, progress=False)
    (stored,) = (tmp_path / "calibration").iterdir()
    assert json.loads(stored.read_text())["reference"] == first.reference.tolist()
    stored.write_text(json.dumps({"reference": [0.25] * 4}))  # a cached file is trusted: proof it is read
    assert prepare(scenario, cache=tmp_path, progress=False).reference.tolist() == [0.25] * 4
    changed = prepare(make_scenario("synthetic", calibration_steps=21), cache=tmp_path, progress=False)
    assert len(list((tmp_path / "calibration").iterdir())) == 2 and changed.reference.tolist() != [0.25] * 4
    stored.write_text("{not json")  # damaged: recomputed and rewritten
    assert prepare(scenario, cache=tmp_path, progress=False).reference.tolist() == first.reference.tolist()


def test_synthetic_data_is_deterministic_by_seed(tmp_path):
    one, two = (prepare(make_scenario("synthetic"), cache=tmp_path, progress=False) for _ in range(2))
    other = prepare(make_scenario("synthetic", data_seed=1), cache=tmp_path, progress=False)
    assert all(np.array_equal(a.train_inputs, b.train_inputs) for a, b in zip(one.tasks, two.tasks, strict=True))
    assert not np.array_equal(one.tasks[0].train_inputs, other.tasks[0].train_inputs)
    keys = np.stack([t.key.numpy() for t in one.tasks])
    cosine = keys @ keys.T / np.outer(np.linalg.norm(keys, axis=1), np.linalg.norm(keys, axis=1))
    assert np.all(cosine[~np.eye(len(keys), dtype=bool)] < 0.999)  # tasks are told apart by their keys


@pytest.fixture(scope="module")
def default_data():
    """The real default scenario (features from the user's cache; extracted there the first time)."""
    return prepare("default", progress=False)


def recovery(curve, reference, tolerance) -> int:
    return next((k for k, accuracy in enumerate(curve) if accuracy >= reference - tolerance), len(curve))


def test_default_is_calibrated_so_relearning_is_slow_and_recalling_is_immediate(default_data):
    scenario = default_data.scenario
    assert default_data.reference.min() > 0.9
    for seed in (0, 1, 2):
        fresh, recalled = [], []
        for task in range(scenario.tasks_per_cycle):
            learner = default_data.learner(seed)
            learner.begin_phase(task, 0, FRESH)
            curve = [learner.evaluate(task)[0]] + [learner.decision_step()[0] for _ in range(scenario.phase_length)]
            fresh.append(recovery(curve, default_data.reference[task], scenario.tolerance))
            position = learner.end_phase()
            learner.begin_phase(task, 1, position)
            curve = [learner.evaluate(task)[0], learner.decision_step()[0]]
            recalled.append(recovery(curve, default_data.reference[task], scenario.tolerance))
        assert np.median(fresh) >= 5 and np.mean(fresh) >= 5, (seed, fresh)
        assert max(recalled) <= 1, (seed, recalled)
