"""An evolutionary agent: CMA-ES (the ``cma`` package) searches a data-augmentation policy on MetaAugment.

In ``MetaAugment-Omniglot-5w1s-v1`` one step plays a whole augmentation policy (5 sub-policies of
operation, magnitude and probability: ``MultiDiscrete([12, 10, 11] * 5)``): the env augments the support
sets of ``tasks_per_step`` val tasks with it, fine-tunes a head on a shipped pretrained Conv-4 and returns
minus the mean query loss. CMA-ES searches the unit cube ``[0, 1]^15``; a point ``u`` is the policy
``floor(u * [12, 10, 11, ...])``. The search runs twice:

1. through the search harness, :func:`metabench.search.search` (``metabench search``), which writes
   ``trace.csv`` (one row per evaluation), ``best.json`` and ``checkpoint.pt`` (the answer as an
   ``open-loop`` agent for ``metabench evaluate``). The registered ``cmaes`` searcher
   (``baselines/search.py``) searches continuous candidates (MetaOptimizer's learning-rate schedules);
   :class:`DiscreteCMAES` below extends it to discrete ones and is passed by its import path, as
   ``metabench search examples.cmaes_search:DiscreteCMAES --env MetaAugment-Omniglot-5w1s-v1 --evaluations 12
   --env-kwargs tasks_per_step=2 copies=1 --config popsize=6`` does from the repository root;
2. by hand in the plain gym loop: ``ask`` a generation, play each policy for one episode, ``tell`` the losses.

The defaults are a smoke test (2 tasks per evaluation, one augmented copy per image, 12 evaluations); the
registered env scores 32 tasks with 4 copies per evaluation. Run: ``python examples/cmaes_search.py``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cma
import gymnasium as gym
import numpy as np
from gymnasium import spaces

import metabench  # noqa: F401  (registers the environments)
from metabench.learners import class_reference
from metabench.search import ENTRY_POINT_GROUP, search
from metabench_baselines.search import CMAES


def to_discrete(unit: np.ndarray, nvec: np.ndarray) -> np.ndarray:
    """The discrete candidate of a point of the unit cube: ``floor(u * n)``, clipped to ``0..n-1``."""
    return np.minimum((np.clip(unit, 0.0, 1.0) * nvec).astype(np.int64), nvec - 1)


class DiscreteCMAES(CMAES):
    """The reference CMA-ES searcher on discrete candidates: it searches the unit cube, candidates are
    :func:`to_discrete` of its points, and its answer is that of its distribution's mean."""

    name = "cmaes-discrete"

    def __init__(self, space: spaces.MultiDiscrete, seed: int, sigma0: float = 0.25, popsize: int | None = None):
        if not isinstance(space, spaces.MultiDiscrete):
            raise ValueError("cmaes-discrete searches discrete candidates (MultiDiscrete); use cmaes for a Box")
        self.nvec = space.nvec
        super().__init__(spaces.Box(0.0, 1.0, shape=space.shape, dtype=np.float64), seed, sigma0, popsize)

    def ask(self) -> np.ndarray:
        return to_discrete(super().ask(), self.nvec)

    def recommend(self) -> np.ndarray:
        return to_discrete(super().recommend(), self.nvec)


def gym_loop(env: gym.Env, generations: int, popsize: int, seed: int) -> dict[str, Any]:
    """CMA-ES by hand: each generation, ``popsize`` policies each play one episode; returns what it found."""
    nvec = env.action_space.nvec
    options = {"bounds": [0.0, 1.0], "popsize": popsize, "seed": seed + 1, "verbose": -9}  # seed 0: unseeded in cma
    strategy = cma.CMAEvolutionStrategy(np.full(len(nvec), 0.5), 0.25, options)
    env.reset(seed=seed)  # later resets continue this task stream: every policy meets fresh val tasks
    rewards, best_reward, best_policy = [], -np.inf, None
    for _ in range(generations):
        points = strategy.ask()
        losses = []
        for point in points:
            policy = to_discrete(np.asarray(point), nvec)
            env.reset()
            _, reward, terminated, truncated, info = env.step(policy)  # one step plays the whole policy
            assert terminated or truncated
            rewards.append(float(reward))
            losses.append(-float(reward))  # cma minimises
            if reward > best_reward:
                best_reward, best_policy = float(reward), policy
        strategy.tell(points, losses)
    return {
        "rewards": rewards,
        "best_reward": best_reward,
        "best_policy": best_policy.tolist(),
        "mean_policy": to_discrete(strategy.mean, nvec).tolist(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="CMA-ES on MetaAugment, by the search harness and by hand.")
    parser.add_argument("--env", default="MetaAugment-Omniglot-5w1s-v1")
    parser.add_argument("--tasks-per-step", type=int, default=2, help="val tasks scored per evaluation (env: 32)")
    parser.add_argument("--copies", type=int, default=1, help="augmented copies per support image (env: 4)")
    parser.add_argument("--evaluations", type=int, default=12, help="policies evaluated by the search harness")
    parser.add_argument("--generations", type=int, default=2, help="generations of the gym-loop search")
    parser.add_argument("--popsize", type=int, default=6, help="policies per CMA-ES generation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder of the harness (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="metabench-cmaes-"))
    env_kwargs = {"tasks_per_step": args.tasks_per_step, "copies": args.copies}

    # 1. The search harness (`metabench search`), with the searcher found by its import path.
    found = search(
        class_reference(DiscreteCMAES, ENTRY_POINT_GROUP),  # "examples.cmaes_search:DiscreteCMAES"
        args.env,
        evaluations=args.evaluations,
        out_dir=out,
        seed=args.seed,
        env_kwargs=env_kwargs,
        config={"popsize": args.popsize},
        progress=False,
    )
    print(f"harness: best reward {found.best_reward:.4f} in {len(found.trace)} evaluations; answer {found.answer}")
    print(f"  wrote {out / 'trace.csv'}, {out / 'best.json'} and {out / 'checkpoint.pt'}")

    # 2. The same search by hand, in the plain gym loop.
    by_hand = gym_loop(gym.make(args.env, **env_kwargs), args.generations, args.popsize, args.seed)
    print(
        f"gym loop: best reward {by_hand['best_reward']:.4f} in {len(by_hand['rewards'])} episodes; "
        f"distribution mean {by_hand['mean_policy']}"
    )
    return {"search": found, "gym_loop": by_hand, "out": out}


if __name__ == "__main__":
    main()
