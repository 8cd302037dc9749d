"""Seconds per MAML meta-iteration (task sampling included), per-task loop against batched tasks.

    python benchmarks/maml_step.py [--device cpu] [--iterations 5] [--env MetaOmniglot-5w1s-v0]

One meta-iteration = draw a meta-batch from the episode engine, adapt every task (1 inner step for
5-way, 5 for 20-way), back-propagate the query loss to the initialisation, take an Adam step.
``task_chunk=1`` runs the tasks one at a time; ``task_chunk=meta_batch`` runs them as one grouped
(batched) pass. Writes ``benchmarks/results/maml_step-<device>.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine, write_results

from metabench.checkpoints import build_learner
from metabench.envs import make_env


def seconds_per_iteration(env_id: str, device: str, first_order: bool, task_chunk: int, iterations: int) -> float:
    learner = build_learner("maml", env_id, {"first_order": first_order, "task_chunk": task_chunk}, device)
    sampler = make_env(env_id, split="train", device=device).sampler
    generator = torch.Generator().manual_seed(0)
    meta_batch = learner.config.meta_batch

    def step() -> None:
        learner.train_step(sampler.sample(meta_batch, generator))
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return (time.perf_counter() - start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--env", default="MetaOmniglot-5w1s-v0")
    args = parser.parse_args()

    meta_batch = build_learner("maml", args.env).config.meta_batch
    results = {
        "env_id": args.env,
        "meta_batch": meta_batch,
        "machine": machine(args.device),
        "seconds_per_meta_iteration": {},
    }
    for first_order in (False, True):
        for label, chunk in (("per-task loop", 1), ("batched (grouped)", meta_batch)):
            key = f"{'first' if first_order else 'second'}-order, {label}"
            seconds = seconds_per_iteration(args.env, args.device, first_order, chunk, args.iterations)
            results["seconds_per_meta_iteration"][key] = round(seconds, 3)
            print(f"{key}: {seconds:.3f} s", flush=True)
    write_results(results, f"maml_step-{args.env}-{args.device.replace(':', '')}")


if __name__ == "__main__":
    main()
