"""Seconds of one MetaNAS evaluation at the default fidelity (the registered env): Conv-4 and the architecture found.

Run: ``python benchmarks/nas_cost.py`` (results in benchmarks/results/nas/README.md).
"""

import time

import gymnasium as gym
import torch

import metabench  # noqa: F401
from metabench import nas

print("threads", torch.get_num_threads())
env = gym.make("MetaNAS-Omniglot-5w1s-v0", mode="oneshot").unwrapped
for name, arch in (
    ("conv4", nas.CONV4),
    ("found", nas.parse("dilconv3x3-64-none,dilconv3x3-64-avgpool,skip-64-none,conv3x3-64-maxpool")),
):
    env.reset(seed=0)
    start = time.perf_counter()
    _, reward, _, _, info = env.step(nas.encode(arch))
    print(
        name,
        f"{time.perf_counter() - start:.1f} s",
        f"reward {reward:.4f}",
        f"val acc {info['accuracy']:.4f}",
        f"MFLOPs {info['flops'] / 1e6:.1f}",
        flush=True,
    )
