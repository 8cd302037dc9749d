"""Hand-designed references for the MetaOptimizer envs: SGD and Adam with a learning rate tuned on ``val`` tasks.

Both start from the env's initialisation and take the env's T updates on the support loss; their one
hyperparameter, a log10 learning rate shared by all layers and steps, is chosen by grid search on
``val`` tasks (a coarse grid of step 0.5, by default over [-4, 0.5], then the best point +- 0.25; each point
scored on the same ``val_episodes`` tasks, episode ``i`` being ``env.reset(seed=VAL_SEED + i)`` as in
the harness's validation).

* **Tuned SGD** is a constant action, hence an open-loop candidate: it is written as an ``open-loop``
  agent checkpoint (:func:`metabench.search.open_loop_checkpoint`) that ``metabench evaluate`` scores
  on the test protocol through the gym path, like every other MetaOptimizer agent (leaderboard entry).
* **Tuned Adam** cannot act through the env: its update is not a per-layer multiple of the gradient.
  It is computed as a reference (:func:`evaluate_reference`) on exactly the test tasks of the harness
  (``env.reset(seed=TEST_SEED + i)`` on the ``test`` split), from the same initialisation, for the same
  T updates (``torch.optim.Adam`` on the env's differentiable support loss), with the env's divergence
  rule checked after every update (:meth:`MetaOptimizerEnv.diverged`) and the env's final scoring
  (:meth:`MetaOptimizerEnv.score`: clipped query loss, accuracy 0 when diverged). It is reported beside
  the agents, not submitted to the leaderboard. The same reference path run with SGD reproduces the
  gym path (tests/test_optimizer_baselines.py), which is what makes the Adam numbers comparable.

Run: ``python -m metabench_baselines.hand_designed --env MetaOptimizer-Sinusoid-v0 --val-episodes 200 --out DIR``
writes ``grid.csv`` (every grid point of both methods), the tuned SGD's ``sgd/checkpoint.pt`` and the
tuned Adam's test evaluation ``adam/summary.json`` + ``adam/episodes.jsonl``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metabench
from metabench.envs import make_env
from metabench.envs.common import device_name
from metabench.envs.optimizer import LOG10_LR_BOUNDS, MetaOptimizerEnv
from metabench.evaluation import TEST_SEED, mean_ci95, protocol_episodes, write_evaluation
from metabench.search import open_loop_checkpoint
from metabench.training import VAL_SEED, write_csv

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
COARSE_GRID = (-4.0, 0.5)
REFINE = 0.25


def _optimizer_env(env_id: str, split: str) -> MetaOptimizerEnv:
    env = make_env(env_id, split=split)
    if not isinstance(env, MetaOptimizerEnv):
        raise ValueError(f"{env_id} is not a MetaOptimizer env")
    return env


def run_episode(env: MetaOptimizerEnv, method: str, log10_lr: float, seed: int) -> dict[str, Any]:
    """One episode (``env.reset(seed=seed)``'s task) trained by ``method`` with lr ``10**log10_lr``; its final info."""
    if method not in OPTIMIZERS:
        raise ValueError(f"method must be one of {sorted(OPTIMIZERS)}, got {method!r}")
    env.reset(seed=seed)
    functions, params = env.task_functions(), env.initial_params()
    optimizer = OPTIMIZERS[method](params.values(), lr=10.0 ** float(log10_lr))
    for update in range(1, env.steps + 1):
        optimizer.zero_grad()
        functions.support_loss(params).backward()
        optimizer.step()
        if env.diverged(params):  # the env ends a diverged episode at once, with the penalty
            return {**env.score(params, diverged=True), "updates": update}
    return {**env.score(params), "updates": env.steps}


def evaluate_reference(
    env_id: str,
    method: str,
    log10_lr: float,
    *,
    split: str = "test",
    n_episodes: int | None = None,
    seed: int = TEST_SEED,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``method`` on the harness's episode list of ``split`` (episode ``i`` = ``reset(seed=seed + i)``).

    Returns a summary shaped like :func:`metabench.evaluation.evaluate`'s (``results`` with reward and,
    for Omniglot, accuracy means and 95% CIs) and one record per episode.
    """
    env = _optimizer_env(env_id, split)
    n_episodes = protocol_episodes(env) if n_episodes is None else n_episodes
    start = time.perf_counter()
    records = []
    for i in range(n_episodes):
        info = run_episode(env, method, log10_lr, seed + i)
        record = {"episode": i, "reward": -info["query_loss"], "diverged": info["diverged"]}
        if "accuracy" in info:
            record["accuracy"] = float(info["accuracy"])
        records.append(record)
    results: dict[str, Any] = {"episodes": n_episodes}
    results["reward_mean"], results["reward_ci95"] = mean_ci95(np.array([r["reward"] for r in records]))
    if "accuracy" in records[0]:
        results["accuracy_mean"], results["accuracy_ci95"] = mean_ci95(np.array([r["accuracy"] for r in records]))
    results["diverged_fraction"] = float(np.mean([r["diverged"] for r in records]))
    summary = {
        "env_id": env_id,
        "agent": f"{method} (reference, log10 lr {log10_lr:g})",
        "protocol": {**env.protocol, "split": split, "episodes": n_episodes, "episode_seed": seed},
        "results": results,
        "run": {
            "device": "cpu",
            "device_name": device_name("cpu"),
            "wall_seconds": round(time.perf_counter() - start, 3),
            "metabench_version": metabench.__version__,
            "torch_version": torch.__version__,
        },
    }
    return summary, records


def grid_search(
    env_id: str, method: str, val_episodes: int, grid: tuple[float, float] = COARSE_GRID
) -> list[dict[str, Any]]:
    """Score ``method`` on ``val`` every 0.5 over ``grid`` (low, high), then at the best point +- 0.25."""
    if not LOG10_LR_BOUNDS[0] <= grid[0] <= grid[1] <= LOG10_LR_BOUNDS[1]:
        raise ValueError(f"grid must be (low, high) within {LOG10_LR_BOUNDS}, got {grid}")
    rows: dict[float, dict[str, Any]] = {}

    def score(log10_lr: float) -> None:
        if log10_lr in rows or not LOG10_LR_BOUNDS[0] <= log10_lr <= LOG10_LR_BOUNDS[1]:
            return
        summary, _ = evaluate_reference(env_id, method, log10_lr, split="val", n_episodes=val_episodes, seed=VAL_SEED)
        rows[log10_lr] = {"method": method, "log10_lr": log10_lr, **summary["results"]}
        print(f"{method} log10 lr {log10_lr:+.2f}: reward {rows[log10_lr]['reward_mean']:.4f}", file=sys.stderr)

    for log10_lr in np.arange(grid[0], grid[1] + 1e-9, 0.5):
        score(round(float(log10_lr), 2))
    best = max(rows.values(), key=lambda row: row["reward_mean"])["log10_lr"]
    for log10_lr in (best - REFINE, best + REFINE):
        score(round(log10_lr, 2))
    return sorted(rows.values(), key=lambda row: row["log10_lr"])


def main(argv: list[str] | None = None) -> int:
    """Tune SGD and Adam on val, write the tuned SGD as an open-loop checkpoint and Adam's test evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="a MetaOptimizer env id")
    parser.add_argument("--val-episodes", type=int, default=100, help="val tasks per grid point")
    parser.add_argument("--test-episodes", type=int, help="test episodes for Adam (default: the env's protocol)")
    parser.add_argument(
        "--grid", type=float, nargs=2, default=COARSE_GRID, metavar=("LOW", "HIGH"), help="coarse grid range"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(
        ["python", "-m", "metabench_baselines.hand_designed", *(sys.argv[1:] if argv is None else argv)]
    )

    tuned = {}
    all_rows = []
    for method in OPTIMIZERS:
        start = time.perf_counter()
        rows = grid_search(args.env, method, args.val_episodes, tuple(args.grid))
        wall = time.perf_counter() - start
        all_rows += rows
        tuned[method] = (max(rows, key=lambda row: row["reward_mean"])["log10_lr"], wall, len(rows))
    write_csv(all_rows, out / "grid.csv")

    env = _optimizer_env(args.env, "val")
    log10_lr, wall, points = tuned["sgd"]
    path = open_loop_checkpoint(
        args.env,
        np.full(env.horizon * len(env.layers), log10_lr),
        out / "sgd" / "checkpoint.pt",
        training={
            "wall_seconds": round(wall, 2),
            "meta_batch": args.val_episodes,
            "episodes_seen": points * args.val_episodes,
            "device": "cpu",
            "device_name": device_name("cpu"),
            "command": command,
            "method": f"grid search of one shared log10 lr on val: tuned SGD, log10 lr {log10_lr:g}",
        },
        iterations=points,
    )
    print(f"tuned SGD: log10 lr {log10_lr:g}; open-loop checkpoint {path}")

    log10_lr, wall, points = tuned["adam"]
    summary, records = evaluate_reference(args.env, "adam", log10_lr, n_episodes=args.test_episodes)
    summary["tuning"] = {"val_episodes": args.val_episodes, "grid_points": points, "wall_seconds": round(wall, 2)}
    summary["command"] = command
    write_evaluation(summary, records, out / "adam")
    results = summary["results"]
    line = f"reward {results['reward_mean']:.4f} +- {results['reward_ci95']:.4f}"
    if "accuracy_mean" in results:
        line += f", accuracy {100 * results['accuracy_mean']:.2f} +- {100 * results['accuracy_ci95']:.2f} %"
    print(f"tuned Adam: log10 lr {log10_lr:g}; test {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
