"""MetaNAS on Ray workers: (1) a fixed batch of evaluations on 1 vs 2 workers; (2) ASHA against plain random
search and regularized evolution at equal simulated cost, over seeds.

    python benchmarks/nas_scaleout.py workers [--fidelity 27] [--val-episodes 50] [--architectures 16] [--repeats 2]
    python benchmarks/nas_scaleout.py asha [--fidelity 27] [--val-episodes 50] [--trials 18] [--min-fidelity 9]

Results: ``results/nas/scaleout-workers.json`` and ``results/nas/scaleout-asha.{json,md}``.

(1) scores the same seeded random architectures (oneshot mode, one episode each) through
:class:`metabench.cluster.Pool`: in this process on one thread, then on 2 Ray workers of one thread each,
timing the start-up (Ray, worker processes, their envs) apart from the evaluations, and checks that both
give the same rewards.
(2) for each seed runs ASHA (random candidates, rungs from ``--min-fidelity`` up by 3x to the fidelity) and
charges its simulated cost C (``total_cost_train_episodes``, every rung counted), then plain random search
and regularized evolution with C / fidelity evaluations at the full fidelity: the same simulated cost.
It reports the best full-fidelity val reward each found (higher is better).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from machine import machine

import metabench  # noqa: F401
from metabench import allocator
from metabench.cluster import Pool
from metabench.evaluation import mean_ci95
from metabench.multifidelity import asha_search
from metabench.search import CandidateWorker, candidate_space, search

ENV_ID = "MetaNAS-Omniglot-5w1s-v1"
RESULTS = Path(__file__).parent / "results" / "nas"


def workers_benchmark(args: argparse.Namespace) -> None:
    env_kwargs = {"mode": "oneshot", "fidelity": args.fidelity, "val_episodes": args.val_episodes}
    spec = gym.spec(ENV_ID)
    space = candidate_space(gym.make(ENV_ID, **env_kwargs))
    rng = np.random.default_rng(0)
    architectures = [rng.integers(space.nvec) for _ in range(args.architectures)]
    torch.set_num_threads(1)
    allocator.keep_freed_memory()  # as the command line and every Ray worker: compare like with like
    walls: dict[int, list[float]] = {1: [], 2: []}
    startups: dict[int, list[float]] = {1: [], 2: []}
    rewards: dict[int, list[float]] = {}
    for _ in range(args.repeats):  # alternating, so that a drift in the machine's load hits both alike
        for workers in (1, 2):
            start = time.perf_counter()
            with Pool(CandidateWorker.make, spec, env_kwargs, "cpu", workers=workers) as pool:
                pool.map("__repr__", [()] * workers)  # start-up: Ray, the worker processes, their envs
                ready = time.perf_counter()
                results = pool.map("score", [(architecture, [0]) for architecture in architectures])
            walls[workers].append(round(time.perf_counter() - ready, 2))
            startups[workers].append(round(ready - start, 2))
            rewards.setdefault(workers, [r["reward"] for r in results])
            print(workers, "worker(s):", startups[workers][-1], "s start-up,", walls[workers][-1], "s", flush=True)
    median = {workers: float(np.median(values)) for workers, values in walls.items()}
    total = {workers: float(np.median(np.add(walls[workers], startups[workers]))) for workers in walls}
    result = {
        "command": f"python benchmarks/nas_scaleout.py workers --fidelity {args.fidelity} --val-episodes "
        f"{args.val_episodes} --architectures {args.architectures} --repeats {args.repeats}",
        "machine": machine("cpu"),
        "env_id": ENV_ID,
        "env_kwargs": env_kwargs,
        "architectures": args.architectures,
        "startup_seconds": {str(workers): values for workers, values in startups.items()},
        "wall_seconds": {str(workers): values for workers, values in walls.items()},
        "speedup_of_medians": round(median[1] / median[2], 2),
        "speedup_with_startup": round(total[1] / total[2], 2),
        "same_rewards": rewards[1] == rewards[2],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaleout-workers.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def asha_benchmark(args: argparse.Namespace) -> None:
    env_kwargs = {"mode": "oneshot", "fidelity": args.fidelity, "val_episodes": args.val_episodes}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        env_kwargs["cache_dir"] = str(Path(scratch, "cache"))  # saves real time only: every result is still charged
        for seed in args.seeds:
            started = time.perf_counter()
            asha = asha_search(
                "random",
                ENV_ID,
                evaluations=args.trials,
                out_dir=Path(scratch, f"asha-{seed}"),
                seed=seed,
                env_kwargs=env_kwargs,
                workers=args.workers,
            )
            cost = asha.trace[-1]["total_cost_train_episodes"]
            row = {
                "seed": seed,
                "cost_train_episodes": cost,
                "asha_trials": args.trials,
                "asha_full_fidelity": sum(r["fidelity"] == args.fidelity for r in asha.trace),
                "asha": asha.best_reward,
                "asha_seconds": round(time.perf_counter() - started, 1),
            }
            evaluations = max(1, round(cost / args.fidelity))
            row["plain_evaluations"] = evaluations
            for method, config in (
                ("random", {}),
                ("evolution", {"population": max(2, evaluations // 3), "sample": 2}),
            ):
                result = search(
                    method,
                    ENV_ID,
                    evaluations=evaluations,
                    out_dir=Path(scratch, f"{method}-{seed}"),
                    seed=seed,
                    env_kwargs=env_kwargs,
                    config=config,
                    workers=args.workers,
                    progress=False,
                )
                assert result.trace[-1]["total_cost_train_episodes"] == evaluations * args.fidelity
                row[method] = result.best_reward
            rows.append(row)
            print(row, flush=True)
    summary = {method: mean_ci95(np.array([row[method] for row in rows])) for method in ("asha", "random", "evolution")}
    result = {
        "machine": machine("cpu"),
        "env_id": ENV_ID,
        "env_kwargs": {k: v for k, v in env_kwargs.items() if k != "cache_dir"},
        "settings": {k: v for k, v in vars(args).items() if k != "what"},
        "seeds": rows,
        "best_val_reward_mean_ci95": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaleout-asha.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "| method | best full-fidelity val reward (mean ± 95% CI over seeds) | evaluations per seed |",
        "|---|---|---|",
    ]
    mean_cost = np.mean([row["cost_train_episodes"] for row in rows])
    lines.append(
        f"| ASHA + random | {summary['asha'][0]:.4f} ± {summary['asha'][1]:.4f} | {args.trials} trials, "
        f"{np.mean([row['asha_full_fidelity'] for row in rows]):.1f} reached fidelity {args.fidelity} |"
    )
    for method in ("random", "evolution"):
        lines.append(
            f"| {method} | {summary[method][0]:.4f} ± {summary[method][1]:.4f} | "
            f"{np.mean([row['plain_evaluations'] for row in rows]):.1f} at fidelity {args.fidelity} |"
        )
    lines.append(f"\nSimulated cost per seed: {mean_cost:.0f} training episodes (mean over seeds {args.seeds}).")
    (RESULTS / "scaleout-asha.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["workers", "asha"])
    parser.add_argument("--fidelity", type=int, default=27)
    parser.add_argument("--val-episodes", type=int, default=50)
    parser.add_argument("--architectures", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trials", type=int, default=18)
    parser.add_argument("--min-fidelity", type=int, default=9)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.what == "workers":
        workers_benchmark(args)
    else:
        asha_benchmark(args)


if __name__ == "__main__":
    main()
