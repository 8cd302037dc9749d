"""MetaAugment headroom: does augmenting the *training* episodes of a few-shot learner change its val loss?

    python benchmarks/augment_headroom.py [--episodes 300] [--seeds 0 1 2] [--classes 0 100] [--workers 2]

Before a training-time MetaAugment env is worth building (issue 15), the effect a policy can have must
exceed the noise. For each training-data regime (``--classes``: all the ``train`` classes of
``MetaOmniglot-5w1s-v1``, or only its first C classes, a data-poor meta-training set) and each train
seed, ProtoNets is trained under each augmentation policy by ``MetaAugment-Omniglot-5w1s-v2``'s recipe
(:meth:`MetaAugmentTrainingEnv.train_for_test` with ``train_classes``, ``train_seed`` and
``train_episodes`` set: Conv-4, 20-way 1-shot training episodes with 5 queries per class, Adam 1e-3,
every image of every training episode augmented). Within a (regime, seed) every policy sees the same
training episodes, initialisation and val tasks: the augmentation draws come from a generator of their
own. Each run is scored task by task on the env's 200 ``val`` 5-way 1-shot tasks (15 queries per
class); reward = minus the mean query loss, as the env scores. (The recorded runs were made by this
script's first version, which wrote the same training out by hand; a rerun through the env reproduced a
recorded run's 200 per-task rewards, see ``benchmarks/README.md``.)

Policies: ``none``; ``hand-written`` (:func:`metabench_baselines.augment_policies.hand_written`: rotation,
shears, zoom, elastic distortion at mild magnitudes, probability 1, chosen a priori); ``strong`` (the same
operations plus translations at 2-3x those magnitudes). Writes ``results/augment/headroom/{runs.jsonl,
headroom.json, headroom.md}`` (``--out``): per regime, each policy's reward minus ``none``'s, paired over val tasks
(pooled over seeds) and over seeds (mean and s.d. of the per-seed differences).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine

import metabench  # noqa: F401
from metabench import allocator
from metabench.envs import make_env
from metabench.envs.augment import DEFAULT_SUB_POLICIES
from metabench.envs.augment_training import VAL_EPISODES, MetaAugmentTrainingEnv
from metabench.evaluation import mean_ci95, score_tasks
from metabench_baselines.augment_policies import cycled, hand_written

ENV_ID = "MetaAugment-Omniglot-5w1s-v2"
TASK_ENV_ID = "MetaOmniglot-5w1s-v1"
RESULTS = Path(__file__).parent / "results" / "augment" / "headroom"


def policies() -> dict[str, np.ndarray]:
    """The policies compared, as flat actions ``[operation, magnitude bin, probability bin] * S``."""
    strong = [("rotate", 5, 10), ("shear_x", 5, 10), ("shear_y", 5, 10), ("scale", 5, 10), ("elastic", 8, 10)]
    strong += [("translate_x", 5, 10), ("translate_y", 5, 10)]
    return {
        "none": np.zeros(3 * DEFAULT_SUB_POLICIES, dtype=np.int64),
        "hand-written": hand_written(DEFAULT_SUB_POLICIES),
        "strong": cycled(tuple(strong), len(strong)),
    }


class HeadroomWorker:
    """Trains ProtoNets under a policy with ``MetaAugment-Omniglot-5w1s-v2``'s recipe in one data regime and scores
    it on the env's val tasks, task by task (for the paired comparison)."""

    def __init__(self) -> None:
        self.all_classes = len(make_env(TASK_ENV_ID, split="train").sampler.classes)
        self.envs: dict[tuple[int, ...], MetaAugmentTrainingEnv] = {}

    def run(self, policy_name: str, seed: int, classes: int, episodes: int) -> dict:
        policy = policies()[policy_name]
        key = (classes, seed, len(policy) // 3, episodes)
        if key not in self.envs:
            self.envs[key] = make_env(
                ENV_ID,
                train_classes=classes or self.all_classes,
                train_seed=seed,
                sub_policies=len(policy) // 3,
                train_episodes=episodes,
            )
        env = self.envs[key]
        start = time.perf_counter()
        learner = env.train_for_test(json.dumps(policy.tolist()))
        seconds = time.perf_counter() - start
        scores = [score_tasks(learner, env.val_env, tasks) for tasks in env.val_tasks]
        rewards, accuracies = (np.concatenate(column) for column in zip(*scores, strict=True))
        return {
            "policy": policy_name,
            "seed": seed,
            "classes": classes,
            "train_classes": classes or self.all_classes,
            "episodes": episodes,
            "train_seconds": round(seconds, 1),
            "val_rewards": [round(float(r), 6) for r in rewards],
            "val_accuracies": [float(a) for a in accuracies],
        }


def summarize(runs: list[dict]) -> dict:
    """Per regime and policy: mean val reward and accuracy, and the paired difference to ``none``."""
    summary: dict = {}
    for classes in sorted({run["classes"] for run in runs}):
        regime = {(run["policy"], run["seed"]): run for run in runs if run["classes"] == classes}
        seeds = sorted({seed for _, seed in regime})
        rows = {}
        for name in policies():
            if not all((name, seed) in regime for seed in seeds):
                continue
            rewards = np.concatenate([regime[name, seed]["val_rewards"] for seed in seeds])
            accuracy = np.concatenate([regime[name, seed]["val_accuracies"] for seed in seeds])
            row = {"reward": mean_ci95(rewards), "accuracy": mean_ci95(accuracy)}
            if name != "none":
                paired = rewards - np.concatenate([regime["none", seed]["val_rewards"] for seed in seeds])
                per_seed = [
                    float(np.mean(regime[name, seed]["val_rewards"]) - np.mean(regime["none", seed]["val_rewards"]))
                    for seed in seeds
                ]
                spread = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
                row["minus_none_paired_tasks"] = mean_ci95(paired)
                row["minus_none_per_seed"] = per_seed
                row["minus_none_seed_sd"] = spread
                # seeds that separate a difference of this size from 0 at the 95% level, given the seed s.d.
                difference = abs(float(np.mean(per_seed)))
                row["seeds_to_separate"] = math.ceil((1.96 * spread / difference) ** 2) if difference else None
            rows[name] = row
        summary[str(classes)] = {"seeds": seeds, "policies": rows}
    return summary


def write_report(summary: dict, runs: list[dict], command: str, out: Path) -> None:
    result = {"command": command, "env_id": ENV_ID, "machine": machine("cpu"), "regimes": summary}
    (out / "headroom.json").write_text(json.dumps(result, indent=1) + "\n")
    episodes = runs[0]["episodes"]
    lines = [
        f"ProtoNets trained by `{ENV_ID}`'s recipe (Conv-4, 20-way 1-shot training episodes, 5 queries), {episodes} "
        f"episodes per run; the env's {VAL_EPISODES} fixed val tasks. Paired: the same episodes, "
        "initialisation and val tasks for every policy of a (regime, seed).",
        "",
        "Train classes 0: all of the split.",
        "",
        "| train classes | policy | val reward (95% CI) | val accuracy | reward - none, paired over tasks "
        "| reward - none per seed | seeds to separate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for classes, regime in summary.items():
        for name, row in regime["policies"].items():
            reward, accuracy = row["reward"], row["accuracy"]
            paired = row.get("minus_none_paired_tasks")
            per_seed = ", ".join(f"{d:+.4f}" for d in row.get("minus_none_per_seed", []))
            lines.append(
                f"| {classes} | {name} | {reward[0]:.4f} ± {reward[1]:.4f} | {100 * accuracy[0]:.2f} ± "
                f"{100 * accuracy[1]:.2f} % | {'' if paired is None else f'{paired[0]:+.4f} ± {paired[1]:.4f}'} | "
                f"{per_seed} | {row.get('seeds_to_separate', '') or ''} |"
            )
    (out / "headroom.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 100], help="0: every train class")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    allocator.keep_freed_memory()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(run["policy"], run["seed"], run["classes"], run["episodes"]) for run in runs}
    calls = [
        (name, seed, classes, args.episodes)
        for classes in args.classes
        for seed in args.seeds
        for name in policies()
        if (name, seed, classes, args.episodes) not in done
    ]
    print(f"{len(runs)} runs done, {len(calls)} to go", flush=True)
    if calls:
        from metabench.cluster import Pool

        if args.workers > 1:  # the worker class lives in this script: send it to the Ray workers by value
            import ray

            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

        def save(run: dict) -> None:
            runs.append(run)
            with path.open("a") as handle:
                handle.write(json.dumps(run) + "\n")
            print(
                f"{run['classes']} classes, seed {run['seed']}, {run['policy']}: val reward "
                f"{np.mean(run['val_rewards']):.4f}, accuracy {np.mean(run['val_accuracies']):.4f}, "
                f"{run['train_seconds']} s",
                flush=True,
            )

        with Pool(HeadroomWorker, workers=args.workers) as pool:
            pool.map("run", calls, progress=save)
    wanted = [run for run in runs if run["episodes"] == args.episodes]
    command = "python benchmarks/augment_headroom.py " + " ".join(sys.argv[1:])
    write_report(summarize(wanted), wanted, command, args.out)


if __name__ == "__main__":
    main()
