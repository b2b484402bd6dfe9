"""analysis.metrics on hand-worked examples, a few properties, and bad inputs."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis.metrics import (
    average_accuracy,
    backward_transfer,
    cumulative_regret,
    forgetting,
    forward_transfer,
    mean_recovery_steps,
    recovery_steps,
    retrieval_precision,
    step_regret,
)

# --- accuracy matrix: the square GEM setting ---------------------------------------------

# Phase i trains task i. Task 0 gains a little while task 1 trains, then drops.
R3 = np.array(
    [
        [0.80, 0.30, 0.20],
        [0.85, 0.90, 0.40],
        [0.50, 0.70, 0.95],
    ]
)
B3 = np.array([0.10, 0.25, 0.30])


def test_square_matrix_by_hand():
    # ACC = (0.50 + 0.70 + 0.95) / 3 = 2.15 / 3
    assert average_accuracy(R3) == pytest.approx(2.15 / 3)
    # BWT = ((R[2,0] - R[0,0]) + (R[2,1] - R[1,1])) / 2 = ((0.50 - 0.80) + (0.70 - 0.90)) / 2 = -0.25
    assert backward_transfer(R3) == pytest.approx(-0.25)
    # FWT = ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.30 - 0.25) + (0.40 - 0.30)) / 2 = 0.075
    assert forward_transfer(R3, B3) == pytest.approx(0.075)
    # forgetting: task 0: max(0.80, 0.85) - 0.50 = 0.35; task 1: max(0.90) - 0.70 = 0.20; mean 0.275
    # (not -BWT = 0.25: task 0's best value came after its training phase)
    assert forgetting(R3) == pytest.approx(0.275)


def test_explicit_arange_phase_tasks_is_the_default():
    tasks = [0, 1, 2]
    assert backward_transfer(R3, tasks) == backward_transfer(R3)
    assert forward_transfer(R3, B3, tasks) == forward_transfer(R3, B3)
    assert forgetting(R3, tasks) == forgetting(R3)


def test_forgetting_ignores_accuracy_before_a_task_is_first_trained():
    R = np.array(
        [
            [0.90, 0.95, 0.10],  # task 1 scores 0.95 before it is ever trained
            [0.80, 0.85, 0.10],
            [0.70, 0.60, 0.90],
        ]
    )
    # task 0: max(0.90, 0.80) - 0.70 = 0.20; task 1: max over phase 1 only = 0.85 - 0.60 = 0.25
    # mean 0.225 (it would be 0.25 if the 0.95 from phase 0 counted)
    assert forgetting(R) == pytest.approx(0.225)


# --- accuracy matrix: recurring tasks ----------------------------------------------------

# Cyclic stream, 2 tasks x 2 cycles: phases train tasks 0, 1, 0, 1.
RC = np.array(
    [
        [0.90, 0.40],
        [0.60, 0.80],
        [0.85, 0.50],
        [0.70, 0.90],
    ]
)
CYCLIC = [0, 1, 0, 1]


def test_cyclic_matrix_by_hand():
    # ACC = (0.70 + 0.90) / 2 = 0.80
    assert average_accuracy(RC, CYCLIC) == pytest.approx(0.80)
    # BWT: only task 0 (task 1 is the last phase's); its last training is phase 2:
    # R[3,0] - R[2,0] = 0.70 - 0.85 = -0.15 (not R[3,0] - R[0,0] = -0.20)
    assert backward_transfer(RC, CYCLIC) == pytest.approx(-0.15)
    # FWT: only task 1 (task 0 is trained first); first trained in phase 1: R[0,1] - b1 = 0.40 - 0.45 = -0.05
    assert forward_transfer(RC, [0.50, 0.45], CYCLIC) == pytest.approx(-0.05)
    # forgetting: task 0: max(R[0..2, 0]) - R[3,0] = max(0.90, 0.60, 0.85) - 0.70 = 0.20
    assert forgetting(RC, CYCLIC) == pytest.approx(0.20)


def test_untrained_tasks_are_left_out():
    R = np.array(
        [
            [0.90, 0.20, 0.10],
            [0.70, 0.80, 0.10],
            [0.95, 0.60, 0.33],
        ]
    )
    tasks = [0, 1, 0]  # task 2 is never trained
    # ACC = (0.95 + 0.60) / 2 = 0.775 (with column 2 it would be 1.88 / 3)
    assert average_accuracy(R, tasks) == pytest.approx(0.775)
    # BWT: task 1 only: R[2,1] - R[1,1] = 0.60 - 0.80 = -0.20
    assert backward_transfer(R, tasks) == pytest.approx(-0.20)
    # FWT: task 1 only: R[0,1] - b1 = 0.20 - 0.05 = 0.15 (b2 = 0.90 would matter if task 2 counted)
    assert forward_transfer(R, [0.5, 0.05, 0.90], tasks) == pytest.approx(0.15)
    # forgetting: task 1 only: R[1,1] - R[2,1] = 0.20
    assert forgetting(R, tasks) == pytest.approx(0.20)


def test_one_phase_leaves_only_acc_defined():
    R = np.array([[0.7, 0.3]])
    assert average_accuracy(R, [1]) == pytest.approx(0.3)
    assert math.isnan(backward_transfer(R, [1]))
    assert math.isnan(forward_transfer(R, [0.5, 0.5], [1]))
    assert math.isnan(forgetting(R, [1]))


def test_one_task_repeated_has_no_transfer_or_forgetting():
    R = np.array([[0.6, 0.0], [0.8, 0.0]])
    assert average_accuracy(R, [0, 0]) == pytest.approx(0.8)
    for value in (backward_transfer(R, [0, 0]), forward_transfer(R, [0, 0], [0, 0]), forgetting(R, [0, 0])):
        assert math.isnan(value)


def test_float_phase_tasks_from_a_table_are_accepted():
    assert backward_transfer(RC, np.array(CYCLIC, dtype=float)) == pytest.approx(-0.15)


# --- properties --------------------------------------------------------------------------

accuracies = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def matrix_and_phases(draw):
    n_phases = draw(st.integers(1, 6))
    n_tasks = draw(st.integers(1, 4))
    R = draw(hnp.arrays(float, (n_phases, n_tasks), elements=accuracies))
    tasks = draw(st.lists(st.integers(0, n_tasks - 1), min_size=n_phases, max_size=n_phases))
    return R, tasks


@given(matrix_and_phases())
def test_forgetting_is_at_least_minus_bwt(case):
    # the max over [f_j, last) includes l_j, so max - R[last] >= R[l_j] - R[last]
    R, tasks = case
    f, b = forgetting(R, tasks), backward_transfer(R, tasks)
    assert math.isnan(f) == math.isnan(b)
    if not math.isnan(f):
        assert f >= -b - 1e-12


@given(st.integers(2, 6).flatmap(lambda n: hnp.arrays(float, (n, n + 1), elements=accuracies)))
def test_square_case_matches_the_gem_formulas(Rb):
    R, b = Rb[:, :-1], Rb[:, -1]
    # GEM: BWT = mean_{i < T-1} R[T-1, i] - R[i, i];  FWT = mean_{i >= 1} R[i-1, i] - b[i]
    assert backward_transfer(R) == pytest.approx(np.mean(R[-1, :-1] - np.diag(R)[:-1]))
    assert forward_transfer(R, b) == pytest.approx(np.mean(np.diag(R, k=1) - b[1:]))
    assert average_accuracy(R) == pytest.approx(R[-1].mean())


@given(st.integers(2, 6).flatmap(lambda n: hnp.arrays(float, (n, n), elements=accuracies)))
def test_forgetting_equals_minus_bwt_when_accuracy_only_falls_after_training(R):
    # make each column non-increasing from its training phase on: then the best value is R[j, j]
    R = R.copy()
    for j in range(R.shape[1]):
        R[j:, j] = np.minimum.accumulate(R[j:, j])
    assert forgetting(R) == pytest.approx(-backward_transfer(R))


# --- recovery steps ----------------------------------------------------------------------


def test_recovery_steps_by_hand():
    # reference 0.75, tolerance 0.125: recovered once accuracy >= 0.625 (exact in binary)
    curves = [
        [0.75, 0.50, 0.50],  # already there before training: 0 (a later drop does not matter)
        [0.25, 0.50, 0.625],  # reaches the threshold exactly after 2 steps: 2 (inclusive)
        [0.25, 0.50, 0.50],  # never: censored, counted as L + 1 = 3
        [0.25, 0.70, 0.50],  # after 1 step: 1
    ]
    steps, censored = recovery_steps(curves, 0.75, tolerance=0.125)
    assert steps.tolist() == [0, 2, 3, 1]
    assert censored.tolist() == [False, False, True, False]
    assert steps.dtype == np.int64 and censored.dtype == bool
    # (0 + 2 + 3 + 1) / 4 = 1.5, the censored visit at its lower bound 3
    assert mean_recovery_steps(steps, censored) == pytest.approx(1.5)


def test_default_tolerance_is_two_points():
    # threshold 0.90 - 0.02 = 0.88: 0.87 is short of it, 0.885 is not
    steps, censored = recovery_steps([0.5, 0.87, 0.885], 0.90)
    assert steps.tolist() == [2] and censored.tolist() == [False]


def test_per_visit_references():
    curves = [[0.6, 0.7, 0.9], [0.6, 0.7, 0.9]]
    steps, censored = recovery_steps(curves, [0.9, 0.5], tolerance=0.0)
    assert steps.tolist() == [2, 0]
    assert not censored.any()


def test_a_visit_with_no_training_steps_is_censored_at_one():
    steps, censored = recovery_steps([[0.5], [0.95]], 0.9)
    assert steps.tolist() == [1, 0]
    assert censored.tolist() == [True, False]


def test_no_visits():
    steps, censored = recovery_steps(np.zeros((0, 4)), [])
    assert steps.shape == (0,) and censored.shape == (0,)
    assert math.isnan(mean_recovery_steps(steps, censored))


def test_mean_counts_censored_visits_at_their_lower_bound():
    # (0 + 4) / 2 = 2.0
    assert mean_recovery_steps([0, 4], [False, True]) == pytest.approx(2.0)


# --- regret ------------------------------------------------------------------------------


def test_step_regret_is_clipped_at_zero():
    # 0.9 - [0.5, 0.95, 0.8] = [0.4, -0.05, 0.1] -> [0.4, 0, 0.1]
    np.testing.assert_allclose(step_regret([0.5, 0.95, 0.8], 0.9), [0.4, 0.0, 0.1])
    np.testing.assert_allclose(cumulative_regret([0.5, 0.95, 0.8], 0.9), [0.4, 0.4, 0.5])


def test_per_step_reference():
    # [0.6, 1.0, 0.8] - [0.5, 0.95, 0.8] = [0.1, 0.05, 0.0]
    np.testing.assert_allclose(step_regret([0.5, 0.95, 0.8], [0.6, 1.0, 0.8]), [0.1, 0.05, 0.0], atol=1e-12)
    np.testing.assert_allclose(cumulative_regret([0.5, 0.95, 0.8], [0.6, 1.0, 0.8]), [0.1, 0.15, 0.15])


@given(hnp.arrays(float, st.integers(0, 30), elements=accuracies), accuracies)
def test_cumulative_regret_is_non_decreasing_and_sums_the_shortfalls(accuracy, reference):
    total = cumulative_regret(accuracy, reference)
    assert total.shape == accuracy.shape
    assert (np.diff(total) >= 0).all()
    if accuracy.size:
        assert total[-1] == pytest.approx(sum(max(0.0, reference - a) for a in accuracy))


# --- retrieval precision -----------------------------------------------------------------


def test_retrieval_precision_counts_only_recalls():
    recalled = [-1, 2, 2, -1, 0, 1]
    current = [0, 2, 2, 1, 1, 1]
    # recalls at steps 1, 2, 4, 5: 2 == 2, 2 == 2, 0 != 1, 1 == 1 -> 3 / 4
    assert retrieval_precision(recalled, current) == pytest.approx(0.75)


def test_retrieval_precision_without_recalls_is_nan():
    assert math.isnan(retrieval_precision([-1, -1], [0, 1]))
    assert math.isnan(retrieval_precision([], []))


# --- bad inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: average_accuracy([[0.5, np.nan], [0.5, 0.5]]), r"R has a NaN or inf at index \(0, 1\)"),
        (lambda: average_accuracy([0.5, 0.5]), r"R must be a non-empty 2D array"),
        (lambda: average_accuracy(np.zeros((0, 3)), []), r"R must be a non-empty 2D array"),
        (lambda: backward_transfer(np.zeros((3, 2))), r"R is 3x2, not square.*pass phase_tasks"),
        (lambda: backward_transfer(np.zeros((3, 2)), [0, 1]), r"phase_tasks has 2 entries but R has 3 phases"),
        (lambda: forgetting(np.zeros((2, 2)), [0, 2]), r"phase_tasks must be task ids in \[0, 2\)"),
        (lambda: forgetting(np.zeros((2, 2)), [0, -1]), r"phase_tasks must be task ids in \[0, 2\)"),
        (lambda: forgetting(np.zeros((2, 2)), [0.0, 0.5]), r"phase_tasks must hold integer task ids"),
        (lambda: forgetting(np.zeros((2, 2)), [[0, 1]]), r"phase_tasks must be 1D"),
        (lambda: forward_transfer(np.zeros((2, 2)), [0.1, 0.1, 0.1]), r"baseline must give one accuracy per task"),
        (lambda: forward_transfer(np.zeros((2, 2)), [0.1, np.nan]), r"baseline has a NaN or inf"),
        (lambda: average_accuracy([["a", "b"]], [0]), r"R must be numeric"),
        (lambda: recovery_steps(np.zeros((2, 2, 2)), 0.5), r"curves must be \(visits, L \+ 1\)"),
        (lambda: recovery_steps(np.zeros((2, 0)), 0.5), r"curves must be \(visits, L \+ 1\)"),
        (lambda: recovery_steps([[0.1, np.nan]], 0.5), r"curves has a NaN or inf at index \(0, 1\)"),
        (lambda: recovery_steps(np.zeros((2, 3)), [0.5] * 3), r"reference must be a scalar or one value per visit"),
        (lambda: recovery_steps(np.zeros((2, 3)), [0.5, np.nan]), r"reference has a NaN or inf at index \(1,\)"),
        (lambda: recovery_steps(np.zeros((2, 3)), 0.5, tolerance=-0.1), r"tolerance must be a scalar >= 0"),
        (lambda: mean_recovery_steps([1, 2], [False]), r"steps has 2 visits but censored has 1"),
        (lambda: mean_recovery_steps([1, 2], [False, 0.5]), r"censored must be booleans"),
        (lambda: mean_recovery_steps([-1, 2], [False, False]), r"steps must be >= 0"),
        (lambda: mean_recovery_steps([0, 2], [True, False]), r"a censored visit has steps 0"),
        (lambda: step_regret([0.5, 0.6], [0.9] * 3), r"reference must be a scalar or one value per decision step"),
        (lambda: step_regret([[0.5, 0.6]], 0.9), r"accuracy must be 1D"),
        (lambda: cumulative_regret([0.5, np.inf], 0.9), r"accuracy has a NaN or inf at index \(1,\)"),
        (lambda: retrieval_precision([0, 1], [0]), r"recalled_task has 2 steps but current_task has 1"),
        (lambda: retrieval_precision([-2, 1], [0, 1]), r"recalled_task must be a task id >= 0, or -1"),
        (lambda: retrieval_precision([0, 1], [0, -1]), r"current_task must be task ids >= 0"),
        (lambda: retrieval_precision([0, 0.5], [0, 1]), r"recalled_task must hold integer task ids"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "module", ["analysis.metrics", "nsr_env.measures", "nsr_env.scenarios", "analysis.report", "analysis.cli"]
)
def test_measures_and_report_import_no_torch(module):
    """The measures, the scenario registry and the report load without torch (`nsr report` needs none)."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'agents')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
