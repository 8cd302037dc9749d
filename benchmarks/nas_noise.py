"""MetaNAS reward noise: the same architectures scored with several training seeds at the registered fidelity.

    python benchmarks/nas_noise.py [--seeds 0 1 2 3 4] [--random 2] [--workers 2]

Conv-4 and ``--random`` seeded random architectures, each scored by ``MetaNAS-Omniglot-5w1s-v1`` (oneshot
mode, registered fidelity and val episodes) with ``train_seed`` 0, 1, ...; the spread across train seeds
beside the differences between architectures says how many seeds a reward needs. Writes
``results/nas/reward_noise.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from machine import machine

import metabench  # noqa: F401
from metabench import allocator, nas
from metabench.cluster import Pool
from metabench.search import CandidateWorker

ENV_ID = "MetaNAS-Omniglot-5w1s-v1"


class SeededWorker:
    """Scores (architecture, train seed) pairs, one env per train seed."""

    def __init__(self) -> None:
        self.workers: dict[int, CandidateWorker] = {}

    def score(self, architecture: list[int], train_seed: int) -> float:
        if train_seed not in self.workers:
            spec = gym.spec(ENV_ID)
            self.workers[train_seed] = CandidateWorker.make(spec, {"mode": "oneshot", "train_seed": train_seed}, "cpu")
        return self.workers[train_seed].score(np.array(architecture), [0])["reward"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--random", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    allocator.keep_freed_memory()
    if args.workers > 1:  # the worker class lives in this script: send it to the Ray workers by value
        import ray

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rng = np.random.default_rng(0)
    architectures = {"conv4": [int(v) for v in nas.encode(nas.CONV4)]}
    for i in range(args.random):
        architectures[f"random-{i}"] = [int(v) for v in rng.integers(4, size=nas.N_DECISIONS)]
    calls = [(architecture, seed) for architecture in architectures.values() for seed in args.seeds]
    start = time.perf_counter()
    with Pool(SeededWorker, workers=args.workers) as pool:
        rewards = pool.map("score", calls, progress=lambda reward: print(f"{reward:.4f}", flush=True))
    table = {}
    for index, name in enumerate(architectures):
        values = np.array(rewards[index * len(args.seeds) : (index + 1) * len(args.seeds)])
        table[name] = {
            "architecture": nas.to_string(nas.decode(architectures[name])),
            "rewards": [round(float(v), 4) for v in values],
            "mean": round(float(values.mean()), 4),
            "sd_across_train_seeds": round(float(values.std(ddof=1)), 4),
        }
        print(name, table[name], flush=True)
    result = {
        "command": "python benchmarks/nas_noise.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": machine("cpu"),
        "env_id": ENV_ID,
        "train_seeds": args.seeds,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "architectures": table,
    }
    path = Path(__file__).parent / "results" / "nas" / "reward_noise.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
