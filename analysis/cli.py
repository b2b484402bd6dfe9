"""The ``nsr`` command line. It sits on top of every layer; the library never imports it."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from nsr_env.backbones import BACKBONES, DEFAULT_BACKBONE, BackboneWeightsError, make_backbone
from nsr_env.data import DataNotFoundError, split_fashion_mnist
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS
from nsr_env.features import TaskFeatures, task_features
from nsr_env.paths import cache_dir


def nearest_mean_accuracy(features: TaskFeatures, backbone) -> float:
    """Held-out accuracy of a nearest-class-mean rule on the frozen head features."""
    train = backbone.pool(features.train.base_outputs)
    held_out = backbone.pool(features.held_out.base_outputs)
    task = features.task
    train_labels = torch.from_numpy(task.local_labels(features.train.labels.numpy()))
    held_out_labels = torch.from_numpy(task.local_labels(features.held_out.labels.numpy()))
    means = torch.stack([train[train_labels == c].mean(0) for c in range(task.num_classes)])
    predicted = torch.cdist(held_out, means).argmin(1)
    return (predicted == held_out_labels).float().mean().item()


def prepare(args: argparse.Namespace) -> int:
    """Load the default tasks, extract (or load) their cached features, print a summary."""
    started = time.perf_counter()
    backbone = make_backbone(args.backbone)
    tasks = split_fashion_mnist(
        train_per_class=args.train_per_class, eval_per_class=args.eval_per_class, seed=args.seed, root=args.data
    )
    features = task_features(backbone, tasks, cache=args.cache, data_root=args.data)
    elapsed = time.perf_counter() - started
    print(
        f"\nSplit-FashionMNIST, {len(tasks)} tasks, backbone {backbone.name} "
        f"(adapted layer {backbone.adapted_layer}: {backbone.in_features} -> {backbone.out_features}, "
        f"input {backbone.transform.size}x{backbone.transform.size})"
    )
    print(f"{'task':<24}{'train':>7}{'held-out':>10}{'inputs (N,P,in)':>20}{'cache':>8}{'nearest-mean acc':>18}")
    total_bytes = 0
    for item in features:
        status = "hit" if item.train.from_cache and item.held_out.from_cache else "new"
        for part in (item.train, item.held_out):
            total_bytes += part.path.stat().st_size
        print(
            f"{item.task.name:<24}{len(item.train):>7}{len(item.held_out):>10}"
            f"{tuple(item.train.inputs.shape)!s:>20}{status:>8}{nearest_mean_accuracy(item, backbone):>18.3f}"
        )
    print(
        f"\nfeature cache: {cache_dir(args.cache) / 'features' / backbone.name} "
        f"({total_bytes / 2**20:.0f} MiB for these tasks); took {elapsed:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare the default data and features and summarise them")
    prep.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    prep.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS)
    prep.add_argument("--eval-per-class", type=int, default=DEFAULT_EVAL_PER_CLASS)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--data", default=None, help="data root (default: $NSR_DATA, then the Debian package)")
    prep.add_argument("--cache", default=None, help="cache root (default: $NSR_CACHE or ~/.cache/nsr_env)")
    prep.set_defaults(run=prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DataNotFoundError, BackboneWeightsError, ValueError) as error:
        print(f"nsr {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
