"""The ``metabench`` command line: environments, data, training, search and evaluation of agents."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import shlex
import sys
from pathlib import Path

from gymnasium.envs.registration import registry

import metabench
from metabench import ENV_IDS, allocator
from metabench.envs import DEPRECATED_IDS
from metabench.leaderboard.cli import add_commands as add_leaderboard_commands

# Only what builds the parser is imported here (no torch): `metabench --help` answers at once, and the command's
# own imports run inside main()'s error handling, where Ctrl-C during start-up is one line, not a traceback.


def _task_description(kwargs: dict) -> str:
    if "n_way" in kwargs:
        task = f"{kwargs['n_way']}-way {kwargs['k_shot']}-shot, {kwargs['n_query']} queries/class"
    else:
        task = f"{kwargs['k_shot']}-shot regression, {kwargs['n_query']} queries"
    extras = ("steps", "tasks_per_step", "mode", "fidelity")
    return ", ".join([task, *(f"{key}={kwargs[key]}" for key in extras if key in kwargs)])


def _protocol_description(kwargs: dict) -> str:
    from metabench import splits

    if "scheme" in kwargs:
        split = f"/{kwargs['split']}" if "split" in kwargs else ""
        edition = splits.find_edition(kwargs["scheme"], "test", kwargs["manifest_sha256"][kwargs["scheme"]]["test"])
        sampling = f", tasks={kwargs['task_sampling']}" if "task_sampling" in kwargs else ""
        return f"split={kwargs['scheme']}@{edition}{split}{sampling}, images={kwargs['preprocessing']}"
    return "A~U[0.1,5], phase~U[0,pi], x~U[-5,5]"


def cmd_envs(args: argparse.Namespace) -> int:
    """Print every registered metabench environment with its task and protocol, current ids first."""
    from metabench import splits

    rows = []
    for env_id in sorted(ENV_IDS, key=lambda env_id: env_id in DEPRECATED_IDS):
        kwargs = registry[env_id].kwargs
        label = f"{env_id} (deprecated)" if env_id in DEPRECATED_IDS else env_id
        rows.append((label, _task_description(kwargs), _protocol_description(kwargs)))
    if args.json:
        specs = [registry[env_id].kwargs | {"id": env_id, "deprecated": env_id in DEPRECATED_IDS} for env_id in ENV_IDS]
        print(json.dumps(specs, indent=1))
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in [("id", "task", "protocol (defaults)"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("\nOmniglot split schemes (pass scheme=..., split='train'|'val'|'test' to gym.make):")
    for scheme in splits.SCHEMES:
        for edition in reversed(splits.editions(scheme)):
            hashes = ", ".join(f"{s}={splits.manifest_sha256(scheme, s, edition)[:12]}" for s in splits.SPLITS)
            print(f"  {scheme}@{edition}: {splits.describe(scheme, edition)}\n    manifest sha256: {hashes}")
    print("\nDeprecated ids stay registered so that their results stay valid and verifiable; see CHANGELOG.md.")
    return 0


def cmd_data_where(args: argparse.Namespace) -> int:
    """Say where raw data is read from and where the preprocessed cache lives."""
    from metabench import data

    root = data.data_dir(args.root)
    print(f"raw data folder : {root if root else f'not set (pass --root or set ${data.DATA_ENV_VAR})'}")
    print(f"cache folder    : {data.cache_dir()}  (set ${data.CACHE_ENV_VAR} to move it)")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """Decode, verify and preprocess Omniglot into the tensor cache (downloading if asked)."""
    from metabench import data

    path = data.prepare(args.root, download_if_missing=args.download, force=args.force)
    print(f"prepared {path}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    """Re-decode the raw files and check every checksum."""
    from metabench import data

    report = data.verify(args.root)
    print(json.dumps(report, indent=1, default=str))
    return 0


def parse_key_values(pairs: list[str], option: str = "--config") -> dict:
    """``key=value`` overrides; values are read as JSON when they parse (numbers, true/false), else strings."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{option} takes key=value pairs, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _resolve_env_id(args: argparse.Namespace) -> None:
    """Replace ``args.env`` by the registered id it names (an unversioned id: its latest version, said on stderr)."""
    from metabench.envs import resolve_env_id

    env_id = resolve_env_id(args.env)
    if env_id != args.env.removeprefix("metabench:"):
        print(f"metabench: {args.env} is {env_id} (its latest version); give a versioned id to pin it", file=sys.stderr)
    args.env = env_id


def cmd_train(args: argparse.Namespace) -> int:
    """Meta-train a learner; resumes from the checkpoint in --out if one exists."""
    from metabench.training import train

    _resolve_env_id(args)
    out = Path(args.out or f"runs/{args.agent}-{args.env}")
    path = train(
        args.agent,
        args.env,
        out,
        iterations=args.iterations,
        config=parse_key_values(args.config),
        device=args.device,
        seed=args.seed,
        val_interval=args.val_interval,
        val_episodes=args.val_episodes,
        time_budget=args.time_budget,
        patience=args.patience,
        command=shlex.join(["metabench", *args.argv]),
        env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
    )
    print(f"checkpoint: {path}\nlog: {out / 'log.csv'}\ncurve: {out / 'curve.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the frozen test protocol on a checkpoint and write summary.json + episodes.jsonl."""
    from metabench.evaluation import evaluate_checkpoint
    from metabench.learners import load_learner_class

    _resolve_env_id(args)
    agent = load_learner_class(args.agent).name
    summary, out = evaluate_checkpoint(
        args.checkpoint,
        args.env,
        agent=args.agent,
        device=args.device,
        n_episodes=args.episodes,
        env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
        out_dir=args.out,
        workers=args.workers,
        address=args.address,
        command=shlex.join(["metabench", *args.argv]),
    )
    results = summary["results"]
    line = f"reward {results['reward_mean']:.4f} +- {results['reward_ci95']:.4f}"
    if "accuracy_mean" in results:
        line = f"accuracy {100 * results['accuracy_mean']:.2f} +- {100 * results['accuracy_ci95']:.2f} %, " + line
    if "design" in summary:  # a design env: the agent's design, trained by the env's recipe, was scored
        agent = f"{agent}'s design ({summary['agent']}, {summary['design']['answer']})"
    print(f"{agent} on {args.env} ({results['episodes']} test episodes): {line}")
    print(f"wrote {out / 'summary.json'} and {out / 'episodes.jsonl'}")
    return 0


def cmd_paired(args: argparse.Namespace) -> int:
    """Compare two scorings of the same test episodes, episode by episode."""
    from metabench.evaluation import paired_difference

    result = paired_difference(args.evaluation, args.baseline)
    line = f"reward {result['reward_difference_mean']:+.4f} +- {result['reward_difference_ci95']:.4f}"
    if "accuracy_difference_mean" in result:
        accuracy = 100 * result["accuracy_difference_mean"], 100 * result["accuracy_difference_ci95"]
        line += f", accuracy {accuracy[0]:+.2f} +- {accuracy[1]:.2f} points"
    print(f"{args.evaluation} - {args.baseline} on the same {result['episodes']} episodes of {result['env_id']}:")
    print(f"{line} (95% CI); a higher reward on {100 * result['better_fraction']:.0f} % of the episodes")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search method for a budget of evaluations, once per seed, and plot best-so-far reward."""
    from metabench.search import load_runs, plot_best_so_far, search, summarize

    _resolve_env_id(args)
    out = Path(args.out or f"runs/search/{args.method}-{args.env}")
    common = {
        "evaluations": args.evaluations,
        "episodes": args.episodes,
        "env_kwargs": parse_key_values(args.env_kwargs, "--env-kwargs"),
        "config": parse_key_values(args.config),
        "device": args.device,
        "workers": args.workers,
        "address": args.address,
        "command": shlex.join(["metabench", *args.argv]),
    }
    if args.scheduler == "asha":
        from metabench.multifidelity import asha_search

        run = functools.partial(
            asha_search, min_fidelity=args.min_fidelity, reduction_factor=args.reduction_factor, **common
        )
    else:
        run = functools.partial(search, fixed_tasks=args.fixed_tasks, gpus_per_worker=args.gpus_per_worker, **common)
    for seed in args.seeds:
        result = run(args.method, args.env, out_dir=out / f"seed-{seed}", seed=seed)
        best = "best full-fidelity reward" if args.scheduler == "asha" else "best reward"
        print(f"seed {seed}: {best} {result.best_reward:.4f} -> {result.out_dir / 'checkpoint.pt'}")
    if args.scheduler == "asha":  # the traces mix fidelities: no best-so-far plot
        return 0
    runs = load_runs([out])
    _print_summary(summarize(runs))
    print(f"plot: {plot_best_so_far(runs, out / 'best_so_far.png', f'{args.method} on {args.env}')}")
    return 0


def parse_grid(pairs: list[str]) -> dict[str, list]:
    """``key=v1,v2,...`` pairs as ``{key: [v1, v2, ...]}``, each value read as in :func:`parse_key_values`."""
    grid = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid takes key=value1,value2,... pairs, got {pair!r}")
        grid[key] = [parse_key_values([f"{key}={value}"], "--grid")[key] for value in values.split(",")]
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train a learner over seeds x a config grid (Ray Tune trials with --workers > 1), test each run, aggregate."""
    from metabench.learners import load_learner_class
    from metabench.sweep import sweep

    _resolve_env_id(args)
    load_learner_class(args.agent)  # an unknown learner fails here, not in every trial
    out = Path(args.out or f"runs/sweep/{args.agent}-{args.env}")
    rows = sweep(
        args.agent,
        args.env,
        out,
        seeds=args.seeds,
        grid=parse_grid(args.grid),
        config=parse_key_values(args.config),
        iterations=args.iterations,
        time_budget=args.time_budget,
        env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
        device=args.device,
        workers=args.workers,
        address=args.address,
        test=args.test,
    )
    score = "accuracy" if any("val_accuracy_mean" in row for row in rows) else "reward"
    for row in rows:
        val, test = (f"{kind}_{score}" for kind in ("val", "test"))
        tested = f", test {score} {row[f'{test}_mean']:.4f} (s.d. {row[f'{test}_sd']:.4f})" if args.test else ""
        print(
            f"{row['point']} (seeds {row['seeds']}): val {score} {row.get(f'{val}_mean', float('nan')):.4f} "
            f"(s.d. {row.get(f'{val}_sd', float('nan')):.4f} across seeds){tested}"
        )
    print(f"runs and sweep.csv / summary.csv in {out}; choose a grid point by val, not by test")
    return 0


def _print_summary(rows: list[dict]) -> None:
    for row in rows:
        spread = f"+- {row['best_reward_ci95']:.4f} (95% CI over seeds)" if row["seeds"] > 1 else "(one seed: no CI)"
        print(
            f"{row['method']}: {row['seeds']} seed{'s' if row['seeds'] > 1 else ''} x {row['evaluations']} "
            f"evaluations, best reward {row['best_reward_mean']:.4f} {spread}, "
            f"{row['wall_seconds_mean']:.0f} s per seed"
        )


def cmd_search_plot(args: argparse.Namespace) -> int:
    """Compare search runs of one env: best-so-far reward against evaluations, mean and 95% CI over seeds."""
    from metabench.search import load_runs, plot_best_so_far, runs_env, summarize
    from metabench.training import write_csv

    runs = load_runs(args.runs)
    env_id, env_kwargs = runs_env(runs)  # refuses runs of different envs
    print(f"env: {env_id}" + (f" {env_kwargs}" if env_kwargs else ""))
    rows = summarize(runs)
    _print_summary(rows)
    if args.csv:
        write_csv(rows, args.csv)
    print(f"plot: {plot_best_so_far(runs, args.out, args.title)}")
    return 0


def _add_worker_arguments(parser: argparse.ArgumentParser, workers_help: str) -> None:
    parser.add_argument("--workers", type=int, default=1, help=workers_help)
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance on this machine's cores)",
    )


ENV_HELP = (
    "env id, e.g. MetaOmniglot-5w1s-v1 or MetaSinusoid-5shot-v0 (`metabench envs` lists them all; an id without "
    "-vN means its latest version)"
)


def _registered(group: str) -> list[str]:
    """The names registered in an entry-point group (read from package metadata: nothing is imported)."""
    from importlib.metadata import entry_points

    return sorted({entry.name for entry in entry_points(group=group)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metabench",
        description="metabench: meta-learning problems as Gymnasium environments (reward = minus the query loss).",
    )
    parser.add_argument("--version", action="version", version=f"metabench {metabench.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    envs = commands.add_parser("envs", help="list the registered environments and their protocols")
    envs.add_argument("--json", action="store_true", help="print the registered specs as JSON")
    envs.set_defaults(func=cmd_envs)

    data_parser = commands.add_parser(
        "data",
        help="prepare, verify or locate the Omniglot data",
        description=(
            "Omniglot is read from a local folder (--root or $METABENCH_DATA) holding either the official "
            "upstream zips (images_background.zip, images_evaluation.zip) or the npz arrays, and preprocessed "
            "once into a tensor cache ($METABENCH_CACHE)."
        ),
    )
    data_commands = data_parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("prepare", cmd_data_prepare, "decode, verify and cache the preprocessed tensor"),
        ("verify", cmd_data_verify, "re-check the raw files and the cache against their checksums"),
        ("where", cmd_data_where, "print the raw data and cache folders"),
    ):
        sub = data_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--root", help="raw data folder (default: $METABENCH_DATA)")
        sub.set_defaults(func=func)
        if name == "prepare":
            sub.add_argument(
                "--download", action="store_true", help="download the official upstream zips if none are found"
            )
            sub.add_argument("--force", action="store_true", help="rebuild the cache even if it is valid")

    train = commands.add_parser(
        "train",
        help="meta-train a learner (progress bar, validation, checkpoints, resume, CSV log, PNG curve)",
        description="Meta-train a learner on an environment's train split, validating on its val split. "
        "Re-running the same command resumes from the checkpoint in --out.",
    )
    train.add_argument("agent", help=f"learner name ({', '.join(_registered('metabench.learners'))}) or module:Class")
    train.add_argument("--env", required=True, help=ENV_HELP)
    train.add_argument(
        "--iterations", type=int, default=60000, help="meta-iterations of the whole run (default: 60000)"
    )
    train.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds of training (validation excluded) in this call: a resumed run trains "
        "up to SECONDS more; the progress bar then counts seconds",
    )
    train.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    train.add_argument(
        "--seed", type=int, help="seed of a new run (default: 0); a resume keeps the checkpoint's and refuses another"
    )
    train.add_argument("--out", help="run folder (default: runs/AGENT-ENV)")
    train.add_argument(
        "--val-interval",
        type=int,
        help="iterations between validations (default: about 20 validations per run, after iteration 0: every "
        "ITERATIONS/20 iterations and, with --time-budget, every SECONDS/20 seconds of training; at least 25 "
        "iterations apart)",
    )
    train.add_argument("--val-episodes", type=int, default=200, help="val episodes per validation")
    train.add_argument(
        "--patience",
        type=int,
        help="early stopping: stop after this many validations without a better val reward, keeping the best "
        "in best.pt (Prototypical Networks: 200 validations of 100 episodes, every 100 iterations)",
    )
    train.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter overrides, values read as JSON (lr=0.01, meta_batch=4, first_order=true), checked "
        "against the learner's Config types; a resume keeps the checkpoint's and refuses other values",
    )
    train.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="env arguments beyond the registered id's, e.g. scheme=lake task_sampling=within-alphabet (stored in "
        "the checkpoint; scores on them are not leaderboard scores of the id)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="run the frozen test protocol (1,000 seeded episodes) on a checkpoint",
        description="Evaluate a checkpoint on the fixed, seeded test episodes of an env; writes summary.json "
        "(accuracy and reward with 95% CIs, wall time, device, peak memory) and episodes.jsonl.",
    )
    evaluate.add_argument("--agent", required=True, help="learner name or module:Class")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt written by metabench train")
    evaluate.add_argument("--env", required=True, help="the env id the checkpoint was trained on")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--episodes", type=int, help="test episodes (default: the env's whole protocol, 1000 for the few-shot envs)"
    )
    evaluate.add_argument("--out", help="output folder (default: beside the checkpoint)")
    evaluate.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="env arguments (default: the checkpoint's); recorded in the summary's protocol",
    )
    _add_worker_arguments(evaluate, "episodes scored in parallel (Ray workers; default 1: in this process)")
    evaluate.set_defaults(func=cmd_evaluate)

    paired = commands.add_parser(
        "paired",
        help="the per-episode difference of two evaluations of the same test episodes, with its 95%% CI",
        description="Paired comparison of two agents: EVALUATION - BASELINE episode by episode (folders written by "
        "`metabench evaluate`, or leaderboard entries such as leaderboard/ENV_ID/NAME); both must have scored the "
        "same episodes (the protocol's episodes_sha256). Prints the mean reward (and accuracy) difference with its "
        "95% CI and the share of episodes the evaluation wins.",
    )
    paired.add_argument("evaluation", help="folder with summary.json and episodes.jsonl")
    paired.add_argument("baseline", help="folder with summary.json and episodes.jsonl, on the same episodes")
    paired.add_argument("--json", help="also write the figures to this JSON file")
    paired.set_defaults(func=cmd_paired)

    sweep_parser = commands.add_parser(
        "sweep",
        help="train a learner over seeds x a config grid, test every run, aggregate across seeds",
        description="Every (grid point, seed) is a trial: metabench train into OUT/<point>-s<seed> (and with "
        "--test the test protocol on its last checkpoint). Writes sweep.csv (one row per trial) and summary.csv "
        "(mean and s.d. across seeds per grid point). With --workers > 1 the trials are Ray Tune trials; re-running an "
        "interrupted sweep resumes it.",
    )
    sweep_parser.add_argument("agent", help="learner name or module:Class")
    sweep_parser.add_argument("--env", required=True, help=ENV_HELP)
    sweep_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    sweep_parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="config values to sweep")
    sweep_parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="config of every trial")
    sweep_parser.add_argument("--iterations", type=int, default=60000, help="meta-iterations per trial")
    sweep_parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="training seconds per trial")
    sweep_parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="env arguments")
    sweep_parser.add_argument("--device", default="cpu")
    sweep_parser.add_argument("--out", help="sweep folder (default: runs/sweep/AGENT-ENV)")
    sweep_parser.add_argument(
        "--test",
        action="store_true",
        help="also score every trial on the test split; each trial's test_runs.jsonl then records the whole "
        "sweep's test runs (a trial picked from it declares --test-data-for-model-selection yes)",
    )
    _add_worker_arguments(sweep_parser, "trials run at once (Ray Tune, one CPU each; default 1: in this process)")
    sweep_parser.set_defaults(func=cmd_sweep)

    search_parser = commands.add_parser(
        "search",
        help="search open-loop candidates (policies, architectures, schedules) with a black-box method",
        description="Run a search method (random, evolution, reinforce, cmaes or module:Class) on an env's val "
        "split for a budget of evaluations, once per seed; writes trace.csv, best.json and checkpoint.pt (the best "
        "candidate as an open-loop agent for `metabench evaluate`) per seed, and best_so_far.png.",
    )
    search_parser.add_argument(
        "method", help=f"search method ({', '.join(_registered('metabench.searchers'))}) or module:Class"
    )
    search_parser.add_argument(
        "--env", required=True, help="env id, e.g. MetaAugment-Omniglot-5w1s-v1 (`metabench envs` lists them all)"
    )
    search_parser.add_argument("--evaluations", type=int, default=50, help="candidates evaluated per seed")
    search_parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one search per seed")
    search_parser.add_argument("--episodes", type=int, default=1, help="episodes per evaluation (mean reward)")
    search_parser.add_argument(
        "--fixed-tasks",
        action="store_true",
        help="score every candidate on the same episodes (reset seeds SEED..SEED+EPISODES-1) instead of fresh ones",
    )
    search_parser.add_argument("--device", default="cpu")
    _add_worker_arguments(search_parser, "candidates scored in parallel (Ray workers; default 1: in this process)")
    search_parser.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs each Ray worker holds (default with --device cuda: 1/workers, the workers share one GPU)",
    )
    search_parser.add_argument(
        "--scheduler",
        choices=["none", "asha"],
        default="none",
        help="asha: multi-fidelity search over the env's fidelity with Ray Tune's ASHA (random or evolution)",
    )
    search_parser.add_argument("--min-fidelity", type=int, help="ASHA's first rung (default: fidelity / 9)")
    search_parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's reduction factor (default 3)")
    search_parser.add_argument("--out", help="output folder (default: runs/search/METHOD-ENV)")
    search_parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="env arguments")
    search_parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="searcher arguments")
    search_parser.set_defaults(func=cmd_search)

    plot = commands.add_parser(
        "search-plot",
        help="plot best-so-far reward of search runs (mean and 95%% CI over seeds, one line per method)",
        description="Compare the search runs under the given folders at equal numbers of evaluations. All runs "
        "must be on the same env (and env arguments); the 95% CI band is clipped at the env's largest possible "
        "reward (0 for metabench's envs).",
    )
    plot.add_argument("runs", nargs="+", help="folders holding search runs (searched recursively for best.json)")
    plot.add_argument("--out", default="best_so_far.png", help="PNG to write")
    plot.add_argument("--title", default="", help="plot title (default: the env id)")
    plot.add_argument("--csv", help="also write the summary table as CSV")
    plot.set_defaults(func=cmd_search_plot)
    add_leaderboard_commands(commands)
    return parser


def _interrupted(error: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """The one line that reports Ctrl-C (or SIGTERM): where training saved its checkpoint, if it did."""
    path, iteration = getattr(error, "path", None), getattr(error, "iteration", None)
    if path is None:
        return "metabench: interrupted"
    if iteration is None:  # a search: its trace is kept
        return f"metabench: {error}; re-run the same command to resume"
    budget = getattr(args, "time_budget", None)
    more = f" (it trains up to {budget:g} s more: --time-budget counts per call)" if budget is not None else ""
    saved = f"metabench: interrupted at iteration {iteration}; checkpoint saved to {path}"
    return f"{saved}; re-run the same command to resume{more}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metabench`` command.

    Returns the exit status: 0 on success, 1 with a one-line ``metabench: ...`` message on stderr for a
    refused input, 130 after Ctrl-C (training saves its checkpoint first), 141 when stdout is closed early
    (e.g. ``metabench envs | head -3``), which ends the command quietly.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    allocator.keep_freed_memory()
    try:
        if isinstance(getattr(args, "device", None), str):
            from metabench.envs.common import resolve_device

            resolve_device(args.device)
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        try:  # point stdout at /dev/null so that the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe
    except KeyboardInterrupt as error:
        print(_interrupted(error, args), file=sys.stderr)
        return 130
    except _refusals() as error:
        print(f"metabench: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"metabench: {os_error_message(error)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("metabench: out of memory: choose a smaller configuration (e.g. width, meta_batch)", file=sys.stderr)
        return 1


def _refusals() -> tuple[type[Exception], ...]:
    """The errors that are a refused input, reported in one line (imported only once one has been raised)."""
    from metabench.data import DataError
    from metabench.leaderboard.schema import LeaderboardError

    return DataError, LeaderboardError, ValueError


_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and re-run the same command (a run resumes from its checkpoint)",
    errno.EDQUOT: "the disk quota is exhausted: free some space and re-run the same command",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EEXIST: "a file is in the way: expected a folder, or a path that does not exist yet",
    errno.ENOTDIR: "a file stands where a folder is expected: choose a folder",
    errno.EISDIR: "a folder stands where a file is expected",
    errno.ENAMETOOLONG: "a name in the path is too long (most file systems allow 255 bytes per name)",
}


def os_error_message(error: OSError) -> str:
    """One line for a failed file operation: the path, the system's reason and what to do about it."""
    if error.errno is None or error.strerror is None:  # raised with a message of its own
        return str(error)
    where = f"{error.filename}: " if error.filename is not None else ""
    hint = _OS_ERROR_HINTS.get(error.errno)
    return f"{where}{error.strerror}" + (f"; {hint}" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
