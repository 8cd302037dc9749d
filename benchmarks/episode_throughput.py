"""Episode-engine speed: tasks per second of the single and vector envs, and gym.make start-up times.

Run from the repository root (Omniglot in $METABENCH_DATA):

    python benchmarks/episode_throughput.py [--device cpu] [--seconds 3]

Prints a table and writes ``benchmarks/results/episode_throughput-<device>.json``. A "task" is one
full env step cycle: sample a task, observe it, score a logits action (zeros) on its queries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
from machine import machine, write_results

import metabench  # noqa: F401

MAKE_SNIPPET = (
    "import time; t = time.perf_counter(); import gymnasium as gym, metabench; "
    "gym.make('MetaOmniglot-20w1s-v1', device='{device}'); print(time.perf_counter() - t)"
)


def tasks_per_second(step, tasks_per_step: int, seconds: float) -> float:
    """Call ``step`` repeatedly for about ``seconds`` and return tasks per second."""
    step()  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        count += 1
    return count * tasks_per_step / elapsed


def single_env(env_id: str, device: str, seconds: float) -> float:
    env = gym.make(env_id, device=device)
    env.reset(seed=0)
    zeros = np.zeros(env.action_space.shape, np.float32)

    def step() -> None:
        env.reset()
        env.step(zeros)

    return tasks_per_second(step, 1, seconds)


def vector_env(env_id: str, device: str, seconds: float, num_envs: int) -> float:
    envs = gym.make_vec(env_id, num_envs=num_envs, device=device)
    envs.reset(seed=0)
    zeros = np.zeros(envs.action_space.shape, np.float32)
    return tasks_per_second(lambda: envs.step(zeros), num_envs, seconds)


def make_time(device: str, cache: str) -> float:
    """Seconds for ``import metabench`` plus ``gym.make`` in a fresh interpreter with the given cache."""
    env = {**os.environ, "METABENCH_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", MAKE_SNIPPET.format(device=device)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--meta-batch", type=int, default=32)
    args = parser.parse_args()

    results: dict = {
        "machine": machine(args.device),
        "tasks_per_second": {},
    }
    for env_id in ("MetaOmniglot-5w1s-v1", "MetaOmniglot-20w1s-v1", "MetaOmniglot-5w1s-v0", "MetaOmniglot-20w1s-v0"):
        results["tasks_per_second"][env_id] = {
            "single_env": round(single_env(env_id, args.device, args.seconds), 1),
            f"vector_env_{args.meta_batch}": round(vector_env(env_id, args.device, args.seconds, args.meta_batch), 1),
        }
    with tempfile.TemporaryDirectory() as cache:
        results["gym_make_seconds"] = {
            "cold (empty cache: decode, verify, preprocess)": round(make_time(args.device, cache), 2),
            "warm (cache present, new process)": round(make_time(args.device, cache), 2),
        }

    print(json.dumps(results, indent=1))
    write_results(results, f"episode_throughput-{args.device.replace(':', '')}")


if __name__ == "__main__":
    main()
