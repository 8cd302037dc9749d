"""Training speed against the machine's peak: GFLOP/s of a training step as a fraction of a large matmul's.

    python benchmarks/train_throughput.py [--threads 1 2] [--steps 10] [--device cpu]

The peak is a 2048^3 float32 matmul on all threads (what the cores can do at best). A step is what
`metabench train` runs: a ProtoNets 60-way 1-shot episode with 5 queries per class (360 images, the
published recipe) and a MAML 5-way 1-shot meta-iteration with K=1 query per class (meta-batch 32,
second order), both drawn from the episode engine, forward, backward and the optimizer step included.
FLOPs are counted by torch's FlopCounterMode on one step (convolutions and matmuls: the work that
dominates). Run it on an idle machine: other processes take cores from the measurement. Writes
``benchmarks/results/train_throughput-<device>.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine, write_results
from torch.utils.flop_counter import FlopCounterMode

from metabench.checkpoints import build_learner
from metabench.envs import make_env

CASES = {
    "protonet 60-way 1-shot episode": ("protonet", "MetaOmniglot-5w1s-v1"),
    "maml 5-way 1-shot meta-iteration (K queries)": ("maml", "MetaOmniglot-5w1s-v1"),
}


def matmul_gflops(device: str, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a ``size``^3 float32 matmul: the peak the training steps are measured against."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def step_throughput(agent: str, env_id: str, device: str, steps: int) -> dict[str, float]:
    """Seconds per training step and its GFLOP/s, for ``agent`` at its default recipe on ``env_id``."""
    learner = build_learner(agent, env_id, device=device)
    sampler = make_env(env_id, split="train", device=device, **learner.train_env_kwargs()).sampler
    generator = torch.Generator().manual_seed(0)
    meta_batch = learner.config.meta_batch
    with FlopCounterMode(display=False) as counter:
        learner.train_step(sampler.sample(meta_batch, generator))  # counts one step, and warms up
    batches = [sampler.sample(meta_batch, generator) for _ in range(steps)]  # sampling is not timed
    start = time.perf_counter()
    for episodes in batches:
        learner.train_step(episodes)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    gflop = counter.get_total_flops() / 1e9
    return {"seconds_per_step": round(seconds, 4), "gflop_per_step": round(gflop, 2), "gflops": gflop / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads to measure with")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per case")
    args = parser.parse_args()

    results: dict = {"machine": machine(args.device), "steps": args.steps, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak = matmul_gflops(args.device)
        row: dict = {"matmul_2048_gflops": round(peak, 1)}
        print(f"{threads} thread(s): 2048^3 float32 matmul {peak:.1f} GFLOP/s", flush=True)
        for label, (agent, env_id) in CASES.items():
            measured = step_throughput(agent, env_id, args.device, args.steps)
            measured["fraction_of_peak"] = round(measured["gflops"] / peak, 3)
            measured["gflops"] = round(measured["gflops"], 1)
            row[label] = measured
            print(
                f"  {label}: {measured['seconds_per_step']:.3f} s/step, {measured['gflop_per_step']:.1f} GFLOP, "
                f"{measured['gflops']:.1f} GFLOP/s = {100 * measured['fraction_of_peak']:.0f}% of the matmul peak",
                flush=True,
            )
        results["threads"][str(threads)] = row
    write_results(results, f"train_throughput-{args.device.replace(':', '')}")


if __name__ == "__main__":
    main()
