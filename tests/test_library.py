"""The offline task library: derived datasets, subsets, library orders and the sources built on them.

Real Fashion-MNIST and scikit-learn digits throughout. Feature extraction uses the tiny_cnn
backbone (random weights, real images) and a few images per class, so every test takes seconds.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

import nsr_env.features as features_module
import nsr_env.scenarios as scenarios_module
from analysis.cli import main
from nsr_env.backbones import make_backbone
from nsr_env.data import class_split, load_dataset
from nsr_env.data.datasets import load_selection
from nsr_env.data.library import CLASS_PAIRS, DISJOINT_PAIRS, LIBRARIES, class_subsets, pair_order
from nsr_env.data.variants import DIGITS_TEST_FRACTION, derive, digits_split, rotate, rotate_bilinear
from nsr_env.features import cached_features
from nsr_env.scenarios import TASK_SOURCES, make_scenario

SMALL = dict(train_per_class=10, eval_per_class=5, probe_per_class=5, backbone="tiny_cnn")


def library_scenario(source: str, tasks: int, **overrides):
    """A scenario on a library with few images per class (``synthetic`` with ``source`` overridden)."""
    return make_scenario("synthetic", source=source, tasks_per_cycle=tasks, **{**SMALL, **overrides})


def load(scenario, cache):
    return TASK_SOURCES.get(scenario.source)(scenario, cache, None, False)


# --- derived datasets -------------------------------------------------------------------------


def test_a_quarter_turn_by_bilinear_interpolation_is_numpys_exact_rot90(fmnist_train):
    images = fmnist_train.images[:200]
    np.testing.assert_array_equal(rotate_bilinear(images, 90), np.rot90(images, 1, axes=(1, 2)))
    np.testing.assert_array_equal(
        load_dataset("fashion_mnist@rot90", "train").images[:200], np.rot90(images, 1, (1, 2))
    )
    np.testing.assert_array_equal(rotate(rotate(rotate(rotate(images, 90), 90), 90), 90), images)


def test_rotation_by_30_degrees_is_scipys_bilinear_rotation(fmnist_train):
    images = fmnist_train.images[:200]
    reference = ndimage.rotate(images.astype(float), 30, axes=(1, 2), reshape=False, order=1, mode="grid-constant")
    difference = np.abs(rotate_bilinear(images, 30).astype(float) - np.clip(np.rint(reference), 0, 255))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # rounding of values at .5 only
    assert not np.array_equal(rotate_bilinear(images, 30), images)


def test_rotated_and_inverted_datasets_keep_labels_and_derive_each_image_alone(fmnist_train, fmnist_test):
    for split, base in (("train", fmnist_train), ("test", fmnist_test)):
        rotated = load_dataset("fashion_mnist@rot120", split)
        assert rotated.name == "fashion_mnist@rot120" and rotated.images.shape == base.images.shape
        np.testing.assert_array_equal(rotated.labels, base.labels)
        np.testing.assert_array_equal(rotated.images[::997], rotate(base.images[::997], 120))
        inverted = load_dataset("fashion_mnist@invert", split)
        np.testing.assert_array_equal(inverted.images[:50], 255 - base.images[:50])
        assert not rotated.images.flags.writeable and not inverted.images.flags.writeable
    assert load_dataset("fashion_mnist@rot120", "train") is load_dataset("fashion_mnist@rot120", "train")


def test_a_selection_of_a_derived_dataset_derives_only_its_images(monkeypatch):
    import nsr_env.data.datasets as datasets

    derived = []

    def counting(images, variant):
        derived.append(len(images))
        return derive(images, variant)

    monkeypatch.setattr(datasets, "derive", counting)
    indices = np.array([3, 70, 5_001, 59_999])
    for name in ("fashion_mnist@rot210", "fashion_mnist@invert"):
        images, labels = load_selection(name, "train", indices)
        whole = load_dataset(name, "train")
        np.testing.assert_array_equal(images, whole.images[indices])
        np.testing.assert_array_equal(labels, whole.labels[indices])
    assert derived == [4, 4]
    with pytest.raises(ValueError, match=r"indices must be .*fashion_mnist@rot30/train.*got values from 0 to 60000"):
        load_selection("fashion_mnist@rot30", "train", np.array([0, 60_000]))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fashion_mnist@rot0", "'rot0' is unknown"),
        ("fashion_mnist@rot360", "'rot360' is unknown"),
        ("fashion_mnist@blur", "'blur' is unknown"),
        ("imagenet@rot30", "dataset='imagenet@rot30' is unknown"),
    ],
)
def test_bad_derived_names_are_named(name, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, "train")


def test_digits_has_the_documented_seeded_80_20_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape[1:] == test.images.shape[1:] == (28, 28) and train.images.dtype == np.uint8
    per_class = np.bincount(train.labels) + np.bincount(test.labels)
    assert per_class.sum() == 1797 and per_class.min() >= 174
    np.testing.assert_array_equal(np.bincount(test.labels), per_class // DIGITS_TEST_FRACTION)
    from sklearn.datasets import load_digits

    labels = load_digits().target
    split = digits_split(labels)
    assert len(np.intersect1d(split["train"], split["test"])) == 0
    assert len(split["train"]) + len(split["test"]) == len(labels)
    np.testing.assert_array_equal(test.labels, labels[split["test"]])
    assert train.images.max() > 200 and train.images[:, 0, 0].max() == 0  # bright strokes on black, as in MNIST


def test_digits_subsets_are_capped_to_what_the_small_dataset_holds():
    subsets = class_subsets("digits", [3, 8], train_per_class=200, eval_per_class=100, probe_per_class=50, seed=0)
    for task in subsets.values():
        assert (len(task.train_indices), len(task.eval_indices), len(task.probe_indices)) == (100, 30, 30)


def test_derived_datasets_have_their_own_cache_entries(cache):
    backbone = make_backbone("tiny_cnn")
    indices = np.arange(0, 100, 7)
    entries = [
        cached_features(backbone, name, "train", indices, cache=cache, progress=False)
        for name in ("fashion_mnist", "fashion_mnist@rot90", "fashion_mnist@invert", "fashion_mnist@rot90")
    ]
    assert len({entry.key for entry in entries}) == 3 and entries[3].from_cache and not entries[1].from_cache
    assert not torch.equal(entries[0].inputs, entries[1].inputs)


# --- the libraries ----------------------------------------------------------------------------


def test_library_sizes_orders_and_families():
    libraries = {name: make() for name, make in LIBRARIES.items()}
    assert {name: len(tasks) for name, tasks in libraries.items()} == {
        "pairs": 45, "rotated": 60, "traps": 10, "mixed": 8, "long": 540
    }  # fmt: skip
    assert sorted(task.classes for task in libraries["pairs"]) == list(CLASS_PAIRS)
    assert all(task.family == task.name for name in ("pairs", "traps", "mixed") for task in libraries[name])
    rotated = libraries["rotated"]
    assert [task.classes for task in rotated[:5]] == list(DISJOINT_PAIRS)
    turned = [f"fashion_mnist@rot{degrees}" for degrees in range(30, 360, 30)]
    assert [task.dataset for task in rotated[::5]] == ["fashion_mnist", *turned]
    assert {task.family for task in rotated} == {f"fashion_mnist({a},{b})" for a, b in DISJOINT_PAIRS}
    traps = libraries["traps"]
    assert [twin.classes for twin in traps[5:]] == [(b, a) for a, b in DISJOINT_PAIRS]
    assert len({task.family for task in traps}) == 10
    long = libraries["long"]
    assert [task.classes for task in long[:45]] == [task.classes for task in libraries["pairs"]]
    assert [task.dataset for task in long[::45]] == ["fashion_mnist", *turned]
    assert long[239].dataset == "fashion_mnist@rot150"  # the registered 240 tasks: angles 0..150
    mixed = libraries["mixed"]
    kinds = ["fashion_mnist", "digits", "fashion_mnist@rot90", "fashion_mnist@invert"]
    assert [task.dataset for task in mixed] == kinds * 2
    fashion = [(task.dataset, task.classes) for task in mixed if task.dataset.startswith("fashion_mnist")]
    assert len({classes for _, classes in fashion}) == len(fashion) == 6


def test_pairs_order_is_one_fixed_shuffle_whatever_the_data_seed(cache):
    assert pair_order() == pair_order(0) != pair_order(1) and sorted(pair_order()) == list(CLASS_PAIRS)
    assert pair_order() != list(CLASS_PAIRS)
    names = [[task.name for task in load(library_scenario("pairs", 3, data_seed=seed), cache)[0]] for seed in (0, 4)]
    assert names[0] == names[1] == [f"fashion_mnist({a},{b})" for a, b in pair_order()[:3]]


@pytest.mark.parametrize(
    ("source", "size"), [("pairs", 45), ("rotated", 60), ("traps", 10), ("mixed", 8), ("long", 540)]
)
def test_more_tasks_than_the_library_holds_is_named(cache, source, size):
    with pytest.raises(ValueError, match=rf"tasks_per_cycle={size + 1} but the library '{source}' has {size} tasks"):
        load(library_scenario(source, size + 1), cache)


def test_probe_training_and_held_out_subsets_are_disjoint_per_class():
    for dataset in ("fashion_mnist", "fashion_mnist@rot30", "digits"):
        subsets = class_subsets(dataset, list(range(10)), 200, 30, 30, seed=5)
        train = load_dataset(dataset, "train")
        for cls, task in subsets.items():
            assert len(np.intersect1d(task.train_indices, task.probe_indices)) == 0
            assert set(train.labels[task.probe_indices]) == set(train.labels[task.train_indices]) == {cls}
            assert set(load_dataset(dataset, "test").labels[task.eval_indices]) == {cls}  # the other split
    plain, turned = (class_subsets(d, [4], 200, 30, 30, seed=5)[4] for d in ("fashion_mnist", "fashion_mnist@rot30"))
    np.testing.assert_array_equal(
        plain.train_indices, turned.train_indices
    )  # one class, the same images at every angle


# --- the sources --------------------------------------------------------------------------------


def test_traps_twins_have_the_same_inputs_and_key_and_swapped_labels(cache):
    tasks, pool_kind = load(library_scenario("traps", 10), cache)
    assert pool_kind == "relu_mean" and [task.num_classes for task in tasks] == [2] * 10
    for original, twin in zip(tasks[:5], tasks[5:], strict=True):
        assert twin.name == f"{original.name}/swapped" and twin.family != original.family
        for field in ("train_inputs", "train_base", "eval_inputs", "probe_inputs"):
            assert torch.equal(getattr(original, field), getattr(twin, field))
        assert torch.equal(original.key, twin.key)
        assert torch.equal(twin.train_labels, 1 - original.train_labels)
        assert torch.equal(twin.eval_labels, 1 - original.eval_labels)
    assert not torch.equal(tasks[0].key, tasks[1].key)


def test_a_pair_task_is_its_two_classes_extracted_together(cache, fmnist_train):
    (task,) = load(library_scenario("rotated", 1), cache)[0]
    (reference,) = class_split("fashion_mnist", [[0, 1]], 10, 5, seed=0, probe_per_class=5)
    backbone = make_backbone("tiny_cnn")
    for subset, inputs, labels in (
        ("train_indices", task.train_inputs, task.train_labels),
        ("probe_indices", task.probe_inputs, task.probe_labels),  # the env draws probes from these tensors
    ):
        indices = getattr(reference, subset)
        with torch.inference_mode():
            direct = backbone.encode(backbone.transform(fmnist_train.images[indices]))
        torch.testing.assert_close(inputs, direct)
        assert labels.tolist() == reference.local_labels(fmnist_train.labels[indices]).tolist()
    assert task.name == "fashion_mnist(0,1)@rot0" and task.family == "fashion_mnist(0,1)"
    assert task.probe_inputs.shape == (10, 16, 16) and task.eval_inputs.shape == (10, 16, 16)


def test_a_second_load_of_a_library_hits_the_cache(cache, monkeypatch):
    first, _ = load(library_scenario("pairs", 3, data_seed=2), cache)

    def no_extraction(*args, **kwargs):
        raise AssertionError("a cache hit must not run the backbone")

    monkeypatch.setattr(features_module, "extract", no_extraction)
    again, _ = load(library_scenario("pairs", 3, data_seed=2), cache)
    for a, b in zip(first, again, strict=True):
        assert a.name == b.name and torch.equal(a.train_inputs, b.train_inputs) and torch.equal(a.key, b.key)


def test_mixed_holds_four_kinds_and_digits_has_its_capped_subsets(cache):
    tasks, _ = load(library_scenario("mixed", 8, train_per_class=120, eval_per_class=40, probe_per_class=40), cache)
    sizes = {task.name: (len(task.train_labels), len(task.eval_labels), len(task.probe_inputs)) for task in tasks}
    assert sizes["digits(0,1)"] == (200, 60, 60) and sizes["fashion_mnist(0,1)"] == (240, 80, 80)
    assert [task.name for task in tasks[:4]] == [
        "fashion_mnist(0,1)", "digits(0,1)", "fashion_mnist(4,5)@rot90", "fashion_mnist(8,9)@invert"
    ]  # fmt: skip


def test_nsr_prepare_scenario_prints_one_line_and_then_hits_the_cache(cache, capsys):
    assert main(["prepare", "--scenario", "synthetic", "--cache", str(cache)]) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith("synthetic: 4 tasks, ") and "cache miss (1 files written)" in first
    assert main(["prepare", "--scenario", "synthetic", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip().endswith("cache hit")


def test_nsr_prepare_library_prepares_every_library_scenario(cache, monkeypatch, capsys):
    prepared = []

    def record(name, **kwargs):  # the real preparation is `nsr prepare --library`'s job, minutes long
        prepared.append(name)
        return SimpleNamespace(tasks=[None] * make_scenario(name).tasks_per_cycle)

    monkeypatch.setattr(scenarios_module, "prepare", record)
    assert main(["prepare", "--library", "--scenario", "pairs", "--cache", str(cache)]) == 0
    assert prepared == ["pairs", "rotated", "traps", "mixed", "long"]
    assert capsys.readouterr().out.splitlines()[-1].startswith("long: 240 tasks, ")
