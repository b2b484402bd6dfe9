"""The ``nsr`` command line. It sits on top of every layer; the library never imports it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym

from nsr_env.config import KEYS
from nsr_env.data import DataNotFoundError, split_fashion_mnist
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS
from nsr_env.paths import cache_dir
from nsr_env.scenarios import DEFAULT_BACKBONE


def nearest_mean_accuracy(features, backbone) -> float:
    """Held-out accuracy of a nearest-class-mean rule on the frozen head features."""
    import torch

    train = backbone.pool(features.train.base_outputs)
    held_out = backbone.pool(features.held_out.base_outputs)
    task = features.task
    train_labels = torch.from_numpy(task.local_labels(features.train.labels.numpy()))
    held_out_labels = torch.from_numpy(task.local_labels(features.held_out.labels.numpy()))
    means = torch.stack([train[train_labels == c].mean(0) for c in range(task.num_classes)])
    predicted = torch.cdist(held_out, means).argmin(1)
    return (predicted == held_out_labels).float().mean().item()


def prepare(args: argparse.Namespace) -> int:
    """Load the default tasks, extract (or load) their cached features, print a summary; with
    ``--scenario``/``--library``, prepare registered scenarios (features and a*), one line each."""
    from nsr_env.backbones import make_backbone  # torch: imported by the commands that need it
    from nsr_env.data.library import LIBRARIES
    from nsr_env.features import task_features

    names = list(dict.fromkeys([*args.scenario, *(LIBRARIES if args.library else ())]))
    if names:
        from nsr_env.scenarios import prepare as prepare_scenario

        root = cache_dir(args.cache)

        def entries() -> set[Path]:
            return {path for folder in ("features", "calibration") for path in (root / folder).rglob("*.*")}

        for name in names:
            before, started = entries(), time.perf_counter()
            data = prepare_scenario(name, cache=args.cache, data_root=args.data)
            written = len(entries() - before)
            cache = "hit" if written == 0 else f"miss ({written} files written)"
            print(f"{name}: {len(data.tasks)} tasks, {time.perf_counter() - started:.1f} s, cache {cache}")
        return 0
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


def parse_override(text: str) -> tuple[str, object]:
    """``--set cycles=2`` -> ("cycles", 2): the value is read as JSON when it parses, else kept as text."""
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"--set {text!r}: write FIELD=VALUE, e.g. --set cycles=2")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def train_ppo_command(args: argparse.Namespace) -> int:
    """Train a (Maskable)PPO controller and say where it went and how it does."""
    import agents  # the CLI sits above the agents; imported here so `nsr prepare` stays light
    from agents.ppo import RECIPE_TIMESTEPS, train_ppo
    from nsr_env.threads import one_torch_thread

    env_kwargs = dict(args.set)
    env = gym.make(args.env, **env_kwargs)  # a bad id or field fails here, before any training
    phase_length = env.unwrapped.scenario.phase_length
    env.close()
    name = "recurrent_ppo" if args.recurrent else args.agent
    timesteps = RECIPE_TIMESTEPS if args.timesteps is None else args.timesteps
    started = time.perf_counter()
    path = train_ppo(
        args.env, timesteps, args.out, seed=args.seed, n_envs=args.n_envs, vector=args.vector, agent=name,
        env_kwargs=env_kwargs, progress_bar=not args.no_progress,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    seed = args.seed + 1
    with one_torch_thread():
        figures = {
            agent: _episode_figures(
                agents.evaluate(agent, args.env, seeds=[seed], agent_kwargs=kwargs, **env_kwargs), phase_length
            )
            for agent, kwargs in ((name, {"path": path}), ("similarity", {}))
        }
    print(
        f"trained {name} on {args.env} for {timesteps:,} steps in {elapsed:.0f} s "
        f"({timesteps / elapsed:.0f} steps/s); saved {path}\n"
        f"one evaluation episode (seed {seed}), beside the similarity rule on the same seed:\n"
        + "".join(
            f"  {agent}: cumulative regret {regret:.2f}, recovery steps on returns {recovery:.2f}\n"
            for agent, (regret, recovery) in figures.items()
        )
        + f"tensorboard --logdir {Path(args.out) / 'tensorboard'}"
    )
    return 0


def _episode_figures(steps, phase_length: int) -> tuple[float, float]:
    """Cumulative regret and mean recovery steps over returning visits (NaN without one) of one episode."""
    from nsr_env import measures

    phases = steps.groupby("phase")
    recovery = measures.returning_recovery(phases.task.first(), phases.recovery_steps.last(), phase_length)
    return float(steps.regret.sum()), float(recovery.mean()) if recovery.size else float("nan")


def sweep_command(args: argparse.Namespace) -> int:
    """Run the unfinished cells of a sweep config (or, with --collect, only gather the finished ones) and say
    where the tables are."""
    from analysis.sweep import collect_sweep, run_sweep

    out = Path(args.out)
    if args.collect:
        finished, total = collect_sweep(args.config, out)
        print(
            f"collected {finished} of {total} cells in {out}: {out / 'summary.csv'}, {out / 'steps.csv'}, "
            f"{out / 'matrices.json'}; next: nsr report {out} (or nsr sweep {args.config} --out {out} to finish)"
        )
        return 0
    started = time.perf_counter()
    summary = run_sweep(args.config, args.out, jobs=args.jobs, backend=args.backend, address=args.address)
    print(
        f"{summary.cell.nunique()} finished cells in {out} ({time.perf_counter() - started:.0f} s this run): "
        f"{out / 'summary.csv'}, {out / 'steps.csv'}, {out / 'matrices.json'}; next: nsr report {out}"
    )
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Write the tables and figures of a sweep's results directory into DIR/report and say where they are."""
    from analysis.report import write_report  # pandas and matplotlib only; imported when the command runs

    try:
        report = write_report(args.directory, resamples=args.resamples, seed=args.seed)
    except FileNotFoundError as error:
        print(f"nsr report: {error}", file=sys.stderr)
        return 2
    print(report.paper_vs_ours)
    for kind, paths in (("tables", report.tables), ("figures", report.figures)):
        print(f"{kind} ({len(paths)} files):")
        for path in paths:
            print(f"  {path}")
    for skipped in report.skipped:
        print(f"skipped: {skipped}")
    print(f"index: {report.directory / 'report.md'}")
    return 0


def parse_size(text: str) -> int | str:
    """``--sizes 10 all``: an entry count, or ``all`` for every task of the scenario."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: give integers or 'all', e.g. --sizes 10 50 all") from None


def retrieval_command(args: argparse.Namespace) -> int:
    """Run the retrieval-at-scale experiment into DIR/retrieval and print precision@1 at the largest memory."""
    from analysis.retrieval import run_retrieval  # torch: imported when the command runs

    given = {name: getattr(args, name) for name in ("sizes", "energies", "keys", "steps")}
    run = run_retrieval(
        args.scenario, args.out, probes=args.probes, seed=args.seed, cache=args.cache, data_root=args.data,
        **{name: value for name, value in given.items() if value is not None}, **dict(args.set),
    )  # fmt: skip
    queries, config = run.queries, run.config
    largest = queries[queries["entries"] == queries["entries"].max()]
    hits = (largest["top_task"] == largest["task"]).groupby([largest["key"], largest["energy"]], sort=False).mean()
    print(f"precision@1 with {config['sizes'][-1]} stored entries ({config['probes']} probes per task):")
    for (key, energy), precision in hits.items():
        print(f"  {key:<7} energy {energy:<5g} {precision:.3f}")
    contribution = run.tasks["contribution"]
    seconds = config["seconds"]
    print(
        f"adapter contribution over {len(contribution)} tasks: mean {contribution.mean():.4f}, "
        f"min {contribution.min():.4f}, max {contribution.max():.4f}\n"
        f"took {seconds['total']:.0f} s (prepare {seconds['prepare']:.0f}, train {seconds['train']:.0f}, "
        f"score {seconds['score']:.0f}); wrote {run.directory}; next: nsr report {args.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare the default data and features and summarise them")
    prep.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"a backbone name (default: {DEFAULT_BACKBONE})")
    prep.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS)
    prep.add_argument("--eval-per-class", type=int, default=DEFAULT_EVAL_PER_CLASS)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--data", default=None, help="data root (default: $NSR_DATA, then the Debian package)")
    prep.add_argument("--cache", default=None, help="cache root (default: $NSR_CACHE or ~/.cache/nsr_env)")
    prep.add_argument(
        "--scenario", action="append", default=[], metavar="NAME",
        help="instead, prepare a registered scenario's features and a* (repeatable; only --data and --cache apply)",
    )  # fmt: skip
    prep.add_argument(
        "--library", action="store_true", help="prepare every library scenario: pairs, rotated, traps, mixed, long"
    )
    prep.set_defaults(run=prepare)
    train = commands.add_parser(
        "train-ppo", help="train a MaskablePPO (or PPO, RecurrentPPO) controller with stable-baselines3"
    )
    train.add_argument("--env", default="nsr_env/NSR-v0", help="environment id (default: nsr_env/NSR-v0)")
    train.add_argument(
        "--timesteps", type=int, default=None, help="environment steps to train for (default: the recipe's budget)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-envs", type=int, default=1, help="parallel environments (subprocesses when > 1)")
    train.add_argument(
        "--vector", type=int, default=None, metavar="N",
        help="N environments batched in this process (the fast way to train on several; instead of --n-envs)",
    )  # fmt: skip
    train.add_argument("--out", required=True, help="folder for model.zip, config.json, tensorboard, checkpoints")
    train.add_argument(
        "--agent", choices=["maskable_ppo", "ppo", "recurrent_ppo"], default="maskable_ppo",
        help="the learned agent (default: maskable_ppo, which samples only valid actions)",
    )  # fmt: skip
    train.add_argument("--maskable", action="store_true", help="the default, kept for older command lines")
    train.add_argument("--recurrent", action="store_true", help="RecurrentPPO (sb3-contrib): history in the policy")
    train.add_argument(
        "--set", type=parse_override, action="append", default=[], metavar="FIELD=VALUE",
        help="override a scenario field, e.g. --set cycles=2 (repeatable)",
    )  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=train_ppo_command)
    sweep = commands.add_parser("sweep", help="run an ablation sweep (agents x seeds x scenarios) from a config")
    sweep.add_argument("config", metavar="CONFIG", help="a YAML config, e.g. configs/quick.yaml")
    sweep.add_argument("--out", required=True, help="results folder; running again resumes it")
    sweep.add_argument("--jobs", type=int, default=1, help="local processes, one torch thread each (default: 1)")
    sweep.add_argument("--backend", choices=["local", "ray"], default="local")
    sweep.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument(
        "--collect", action="store_true", help="run nothing: write the tables of the cells finished so far"
    )
    sweep.set_defaults(run=sweep_command)
    report = commands.add_parser("report", help="tables and figures of a sweep's results directory, into DIR/report")
    report.add_argument("directory", metavar="DIR", help="the folder `nsr sweep --out` wrote")
    report.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    report.set_defaults(run=report_command)
    retrieval = commands.add_parser(
        "retrieval", help="does a key surface the right past adapter as memory grows? into DIR/retrieval"
    )
    retrieval.add_argument("--scenario", default="long", help="a registered scenario (default: long)")
    retrieval.add_argument(
        "--out", default="results", help="results directory, e.g. a sweep's --out; files go to DIR/retrieval"
    )
    retrieval.add_argument(
        "--sizes", nargs="+", type=parse_size, metavar="N",
        help="numbers of stored entries, 'all' for every task (default: 10 20 50 100 200 all)",
    )  # fmt: skip
    retrieval.add_argument("--energies", nargs="+", type=float, metavar="E", help="SVD energies (default: 0.9 0.99 1)")
    retrieval.add_argument("--keys", nargs="+", choices=KEYS, help=f"key kinds (default: {' '.join(KEYS)})")
    retrieval.add_argument("--probes", type=int, default=5, help="queries per stored task (default: 5)")
    retrieval.add_argument("--steps", type=int, help="decision steps per task (default: 40)")
    retrieval.add_argument("--seed", type=int, default=0)
    retrieval.add_argument(
        "--set", type=parse_override, action="append", default=[], metavar="FIELD=VALUE",
        help="override a scenario field, e.g. --set probe_size=8 (repeatable)",
    )  # fmt: skip
    retrieval.add_argument("--data", default=None, help="data root (default: $NSR_DATA, then the Debian package)")
    retrieval.add_argument("--cache", default=None, help="cache root (default: $NSR_CACHE or ~/.cache/nsr_env)")
    retrieval.set_defaults(run=retrieval_command)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input or missing data or weights: printed as one line, exit code 2."""
    errors: list[type[BaseException]] = [DataNotFoundError, ValueError, gym.error.Error]
    if "nsr_env.backbones" in sys.modules:  # only a command that imported torch can fail to get weights
        errors.append(sys.modules["nsr_env.backbones"].BackboneWeightsError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _user_errors() as error:
        print(f"nsr {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
