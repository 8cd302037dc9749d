"""MetaAugment baselines: fixed augmentation policies, and choosing a searched policy on val tasks.

Fixed candidates (open-loop agents, :class:`metabench.search.OpenLoop`), for S sub-policies:

* ``no-augmentation``: identity everywhere; reproduces the env's no-augmentation reference exactly.
* ``random``: one policy drawn uniformly from the action space with ``numpy.random.default_rng(0)``
  (an operation, magnitude bin and probability bin per sub-policy): what a policy picked blindly does.
* ``hand-written``: mild geometric and elastic distortions applied to every copy (probability 1),
  chosen a priori (not tuned on any split) from what handwriting tolerates: rotation 9 degrees,
  horizontal and vertical shear 0.09, zoom 1.3^0.3 = 1.08, elastic distortion of 0.75 px RMS
  (magnitude bins 2, 2, 2, 2, 4 of :mod:`metabench.augment`; one sub-policy each).
* ``strong-geometric``: the same operations at about 2.5x those magnitudes (rotation 18 degrees, shears
  0.18, zoom 1.3^0.6, elastic 1.35 px RMS), every copy: ``benchmarks/augment_headroom.py``'s ``strong``
  policy (chosen a priori) without its two translation sub-policies, which the env's 5 do not hold.

Selection (``select``): the searches' best candidates (the top ``--top`` distinct candidates of each
run by search reward) and any PPO agents' deterministic policies are re-scored on one larger fixed
set of ``val`` tasks, the same for all, next to the env's no-augmentation reference: episodes
``reset(seed=SELECT_SEED + i)``, ``i < steps`` (default 10 x 32 tasks), so every candidate sees the
same tasks and the same augmentation draws. The candidate with the highest mean val reward wins; it
is written as an ``open-loop`` checkpoint for ``metabench evaluate`` on the test protocol.

Commands::

    python -m metabench_baselines.augment_policies fixed --out DIR                 # checkpoints of the fixed policies
    python -m metabench_baselines.augment_policies select RUN_DIR... [--ppo CKPT ...] --out DIR
    python -m metabench_baselines.augment_policies paired EVAL_DIR BASELINE_EVAL_DIR  # per-episode paired difference
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metabench import augment
from metabench.envs import make_env
from metabench.envs.augment import DEFAULT_SUB_POLICIES
from metabench.envs.common import device_name
from metabench.evaluation import mean_ci95, paired_difference
from metabench.search import load_runs, open_loop_checkpoint, play
from metabench.training import write_csv

ENV_ID = "MetaAugment-Omniglot-5w1s-v0"
SELECT_SEED = 10_000  # val episodes of the selection: reset(seed=SELECT_SEED + i)
SELECT_STEPS = 10
RANDOM_POLICY_SEED = 0
HAND_WRITTEN = (  # (operation, magnitude bin, probability bin)
    ("rotate", 2, 10),
    ("shear_x", 2, 10),
    ("shear_y", 2, 10),
    ("scale", 2, 10),
    ("elastic", 4, 10),
)


def no_augmentation(sub_policies: int = DEFAULT_SUB_POLICIES) -> np.ndarray:
    """The flat action ``[op, magnitude, probability] * S`` that never augments (identity everywhere)."""
    return np.zeros(3 * sub_policies, dtype=np.int64)


def random_policy(sub_policies: int = DEFAULT_SUB_POLICIES, seed: int = RANDOM_POLICY_SEED) -> np.ndarray:
    """A policy drawn uniformly from the action space by ``numpy.random.default_rng(seed)``."""
    sizes = np.tile([len(augment.OPS), augment.N_MAGNITUDES, augment.N_PROBABILITIES], sub_policies)
    return np.random.default_rng(seed).integers(0, sizes)


def cycled(rows: tuple[tuple[str, int, int], ...], sub_policies: int) -> np.ndarray:
    """The flat action of ``(operation name, magnitude bin, probability bin)`` rows, cycled to ``sub_policies``."""
    picked = [rows[i % len(rows)] for i in range(sub_policies)]
    return np.array([(augment.OPS.index(op), magnitude, p) for op, magnitude, p in picked], dtype=np.int64).ravel()


def hand_written(sub_policies: int = DEFAULT_SUB_POLICIES) -> np.ndarray:
    """:data:`HAND_WRITTEN`, cycled to ``sub_policies`` rows."""
    return cycled(HAND_WRITTEN, sub_policies)


STRONG_GEOMETRIC = (  # HAND_WRITTEN's operations at about 2.5x its magnitudes
    ("rotate", 5, 10),
    ("shear_x", 5, 10),
    ("shear_y", 5, 10),
    ("scale", 5, 10),
    ("elastic", 8, 10),
)


def strong_geometric(sub_policies: int = DEFAULT_SUB_POLICIES) -> np.ndarray:
    """:data:`STRONG_GEOMETRIC`, cycled to ``sub_policies`` rows."""
    return cycled(STRONG_GEOMETRIC, sub_policies)


FIXED: dict[str, Callable[[int], np.ndarray]] = {
    "no-augmentation": no_augmentation,
    "random": random_policy,
    "hand-written": hand_written,
    "strong-geometric": strong_geometric,
}


def describe(candidate: Any) -> str:
    """A policy in words, e.g. ``rotate m3 p1.0; identity``; sub-policies that never augment read ``identity``."""
    rows = np.asarray(candidate, dtype=np.float64).astype(np.int64).reshape(-1, 3)
    words = [
        f"{augment.OPS[op]} m{magnitude} p{p / (augment.N_PROBABILITIES - 1):.1f}"
        if op != augment.IDENTITY and p > 0
        else "identity"
        for op, magnitude, p in rows
    ]
    return "; ".join(words)


def _training(wall_seconds: float, evaluations: int, command: str) -> dict[str, Any]:
    """The budget block of an open-loop checkpoint: one-step episodes scored on the CPU."""
    return {
        "wall_seconds": round(wall_seconds, 3),
        "meta_batch": 1,
        "episodes_seen": evaluations,
        "device": "cpu",
        "device_name": device_name("cpu"),
        "command": command,
    }


def write_fixed(out_dir: str | Path, env_id: str = ENV_ID, command: str = "") -> dict[str, Path]:
    """Write the fixed candidates of ``env_id`` as ``open-loop`` checkpoints ``out_dir/NAME/checkpoint.pt``."""
    sub_policies = make_env(env_id, split="val").sub_policies
    return {
        name: open_loop_checkpoint(
            env_id, policy(sub_policies), Path(out_dir) / name / "checkpoint.pt", training=_training(0.0, 0, command)
        )
        for name, policy in FIXED.items()
    }


def searched_candidates(run_dirs: list[str | Path], top: int) -> dict[str, dict[str, Any]]:
    """The ``top`` distinct candidates of highest search reward of each search run found under ``run_dirs``."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    found: dict[str, dict[str, Any]] = {}
    for runs in load_runs(run_dirs).values():
        for run in runs:
            best = run["best"]
            rows = sorted(run["rows"], key=lambda row: -float(row["reward"]))
            kept: list[str] = []
            for row in rows:
                if row["candidate"] not in kept and len(kept) < top:
                    kept.append(row["candidate"])
                    name = f"{run['dir']}/evaluation-{row['evaluation']}"  # the folder: runs of a method differ
                    found[name] = {
                        "candidate": [float(value) for value in row["candidate"].split()],
                        "search_reward": float(row["reward"]),
                        "search_wall_seconds": best["wall_seconds"],
                        "search_evaluations": best["evaluations"],
                    }
    return found


def ppo_candidate(checkpoint: str | Path) -> list[float]:
    """The deterministic action of a PPO checkpoint on MetaAugment's constant observation, as a candidate."""
    from metabench.checkpoints import load_checkpoint

    learner, _ = load_checkpoint(checkpoint)
    return [float(value) for value in learner.act(np.zeros(learner.observation_space.shape, np.float32))]


def score_on_val(
    env_id: str,
    candidates: dict[str, list[float]],
    steps: int = SELECT_STEPS,
    seed: int = SELECT_SEED,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean val reward and accuracy of each candidate on episodes ``reset(seed=seed + i)``, ``i < steps``.

    Also the paired difference to the env's no-augmentation reference on the same tasks (mean and
    95% CI over the ``steps`` episodes). ``env_kwargs`` override the env's registered arguments.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    env = make_env(env_id, split="val", **(env_kwargs or {}))
    scores = {}
    for name, candidate in candidates.items():
        rows = [play(env, candidate, seed=seed + i) for i in range(steps)]
        rewards = np.array([reward for reward, _ in rows])
        accuracies = np.array([info["accuracy"] for _, info in rows])
        reference_rewards = np.array([info["reference_reward"] for _, info in rows])
        reference_accuracies = np.array([info["reference_accuracy"] for _, info in rows])
        score = {}
        for key, values in (
            ("reward", rewards),
            ("accuracy", accuracies),
            ("reward_minus_reference", rewards - reference_rewards),
            ("accuracy_minus_reference", accuracies - reference_accuracies),
        ):
            score[f"{key}_mean"], score[f"{key}_ci95"] = mean_ci95(values)
        scores[name] = score
    return scores


def select(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    ppo: list[str | Path] | None = None,
    top: int = 2,
    steps: int = SELECT_STEPS,
    env_id: str = ENV_ID,
    env_kwargs: dict[str, Any] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Re-score the searched (and PPO) candidates on the same val tasks; write the winner's checkpoint.

    Writes ``selection.csv`` (one row per candidate) and ``selection.json`` into ``out_dir``, and the
    winner among the searched candidates as ``out_dir/selected/checkpoint.pt`` (its budget: the wall
    time and evaluations of all searches plus this selection). Returns the selection summary.
    """
    searched = searched_candidates(run_dirs, top)
    for path in ppo or []:
        searched[f"ppo/{Path(path).parent.name}"] = {"candidate": ppo_candidate(path)}
    start = time.perf_counter()
    candidates = {name: row["candidate"] for name, row in searched.items()}
    scores = score_on_val(env_id, candidates, steps, env_kwargs=env_kwargs)
    selection_seconds = time.perf_counter() - start
    winner = max(searched, key=lambda name: scores[name]["reward_mean"])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, candidate in candidates.items():
        row: dict[str, Any] = {"candidate_name": name, "search_reward": searched[name].get("search_reward", "")}
        row.update(scores[name])
        row.update(policy=describe(candidate), candidate=" ".join(f"{value:g}" for value in candidate))
        rows.append(row)
    rows.sort(key=lambda row: -row["reward_mean"])
    write_csv(rows, out / "selection.csv")
    runs = {  # (run, wall seconds, evaluations) of each search run
        (name.rsplit("/", 1)[0], row["search_wall_seconds"], row["search_evaluations"])
        for name, row in searched.items()
        if "search_wall_seconds" in row
    }
    search_seconds, search_evaluations = sum(run[1] for run in runs), sum(run[2] for run in runs)
    evaluations = search_evaluations + steps * len(scores)
    path = open_loop_checkpoint(
        env_id,
        searched[winner]["candidate"],
        out / "selected" / "checkpoint.pt",
        training=_training(search_seconds + selection_seconds, evaluations, command),
        iterations=evaluations,
    )
    summary = {
        "env_id": env_id,
        "val_episodes": steps,
        "val_episode_seeds": [SELECT_SEED, SELECT_SEED + steps - 1],
        "candidates": len(scores),
        "winner": winner,
        "winner_policy": describe(searched[winner]["candidate"]),
        "winner_candidate": searched[winner]["candidate"],
        "winner_val": scores[winner],
        "selection_wall_seconds": round(selection_seconds, 2),
        "checkpoint": str(path),
    }
    (out / "selection.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """The ``fixed``, ``select`` and ``paired`` commands (see the module doc)."""
    parser = argparse.ArgumentParser(
        prog="python -m metabench_baselines.augment_policies", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fixed_parser = commands.add_parser("fixed", help="write the fixed policies as open-loop checkpoints")
    fixed_parser.add_argument("--out", required=True)
    fixed_parser.add_argument("--env", default=ENV_ID)
    select_parser = commands.add_parser("select", help="choose the searched policy on val tasks")
    select_parser.add_argument("runs", nargs="+", help="folders holding search runs (best.json, trace.csv)")
    select_parser.add_argument("--ppo", nargs="*", default=[], help="PPO checkpoints whose policies compete too")
    select_parser.add_argument("--top", type=int, default=2, help="best candidates kept per search run")
    select_parser.add_argument("--steps", type=int, default=SELECT_STEPS, help="val episodes per candidate")
    select_parser.add_argument("--env", default=ENV_ID)
    select_parser.add_argument("--out", required=True)
    paired_parser = commands.add_parser("paired", help="paired difference of two evaluations")
    paired_parser.add_argument("evaluation")
    paired_parser.add_argument("baseline")
    args = parser.parse_args(argv)
    command = shlex.join(
        ["python", "-m", "metabench_baselines.augment_policies", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.command == "fixed":
        for name, path in write_fixed(args.out, args.env, command).items():
            print(f"{name}: {path}")
    elif args.command == "select":
        summary = select(
            args.runs, args.out, ppo=args.ppo, top=args.top, steps=args.steps, env_id=args.env, command=command
        )
        print(json.dumps(summary, indent=1))
    else:
        print(json.dumps(paired_difference(args.evaluation, args.baseline), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
