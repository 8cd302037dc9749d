"""MetaNAS on Ray workers: (1) a fixed batch of evaluations on 1 vs 2 workers; (2) ASHA against plain random
search and regularized evolution at equal simulated cost, over seeds.

    python benchmarks/nas_scaleout.py workers [--fidelity 27] [--val-episodes 50] [--architectures 8]
    python benchmarks/nas_scaleout.py asha [--fidelity 27] [--val-episodes 50] [--trials 18] [--min-fidelity 9]

Results: ``results/nas/scaleout-workers.json`` and ``results/nas/scaleout-asha.{json,md}``.

(1) scores the same seeded random architectures (oneshot mode, one episode each) through
:class:`metabench.cluster.Pool`: in this process on one thread, then on 2 Ray workers of one thread each
(worker start-up included in the wall time), and checks that both give the same rewards.
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
    runs = {}
    for workers in (1, 2):
        start = time.perf_counter()
        with Pool(CandidateWorker, spec, env_kwargs, "cpu", workers=workers) as pool:
            results = pool.map("score", [(architecture, [0]) for architecture in architectures])
        runs[workers] = {
            "wall_seconds": round(time.perf_counter() - start, 2),
            "rewards": [r["reward"] for r in results],
        }
        print(workers, "worker(s):", runs[workers]["wall_seconds"], "s", flush=True)
    result = {
        "command": "python benchmarks/nas_scaleout.py workers "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "what"),
        "machine": machine("cpu"),
        "env_id": ENV_ID,
        "env_kwargs": env_kwargs,
        "architectures": args.architectures,
        "wall_seconds": {str(workers): run["wall_seconds"] for workers, run in runs.items()},
        "speedup": round(runs[1]["wall_seconds"] / runs[2]["wall_seconds"], 2),
        "same_rewards": runs[1]["rewards"] == runs[2]["rewards"],
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
    parser.add_argument("--architectures", type=int, default=8)
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
