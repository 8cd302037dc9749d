"""Headroom of MetaReweight: the oracle (weight 0 on the corrupted training labels, 1 on the rest) against
uniform weights, paired over the same tasks, for several learner initialisations (``init_seed``).

Episode ``i`` is ``env.reset(seed=i)`` on the ``val`` split (Omniglot; the sinusoid has no split), so both
weightings see the same task with the same corrupted labels. Prints the mean rewards, the paired gap with
its 95% CI per init seed and pooled, and how many tasks a paired comparison needs to resolve a gap of a
given size (paired: ``(1.96 sd / gap)^2`` with the sd of the per-task differences; unpaired:
``2 (1.96 sd / gap)^2`` with the sd of the uniform rewards); writes one row per episode.

Run: ``OMP_NUM_THREADS=1 nice -n 5 python benchmarks/reweight_headroom.py --env MetaReweight-Sinusoid-v0
--tasks 200 --init-seeds 0 1 2 --out benchmarks/results/reweight_headroom_sinusoid.csv``
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from metabench.envs import make_env
from metabench.envs.reweight import MetaReweightEnv
from metabench.evaluation import mean_ci95


def play(env: MetaReweightEnv, seed: int, oracle: bool) -> dict[str, float]:
    """One episode with the oracle's or uniform weights; its reward and accuracy."""
    env.reset(seed=seed)
    weights = (~env.corrupted).float().cpu().numpy() if oracle else np.ones(env.n, np.float32)
    terminated, reward, info = False, 0.0, {}
    while not terminated:
        _, reward, terminated, _, info = env.step(weights)
    return {"reward": reward, "accuracy": float(info.get("accuracy", np.nan)), "diverged": info["diverged"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="MetaReweight-Sinusoid-v0")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--init-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise-rate", type=float, default=None, help="override the env's noise rate")
    parser.add_argument("--out", type=Path, required=True, help="CSV of every episode; a .json summary beside it")
    args = parser.parse_args()
    overrides = {} if args.noise_rate is None else {"noise_rate": args.noise_rate}
    rows = []
    for init_seed in args.init_seeds:
        env = make_env(args.env, split="val", init_seed=init_seed, **overrides)
        for seed in range(args.tasks):
            uniform, oracle = play(env, seed, oracle=False), play(env, seed, oracle=True)
            rows.append(
                {"init_seed": init_seed, "task_seed": seed, **{f"uniform_{k}": v for k, v in uniform.items()}}
                | {f"oracle_{k}": v for k, v in oracle.items()}
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def stats(selected: list[dict]) -> dict[str, float]:
        uniform = np.array([r["uniform_reward"] for r in selected])
        oracle = np.array([r["oracle_reward"] for r in selected])
        gap, ci = mean_ci95(oracle - uniform)
        result = {"tasks": len(selected), "uniform": mean_ci95(uniform), "oracle": mean_ci95(oracle)}
        result |= {"gap": gap, "gap_ci95": ci, "gap_sd": float(np.std(oracle - uniform, ddof=1))}
        result["uniform_sd"] = float(np.std(uniform, ddof=1))
        if not np.isnan(selected[0]["uniform_accuracy"]):
            for name in ("uniform", "oracle"):
                result[f"{name}_accuracy"] = mean_ci95(np.array([r[f"{name}_accuracy"] for r in selected]))
        return result

    summary = {"env": args.env, "noise_rate": make_env(args.env, split="val", **overrides).noise_rate}
    summary["per_init_seed"] = {s: stats([r for r in rows if r["init_seed"] == s]) for s in args.init_seeds}
    summary["pooled"] = pooled = stats(rows)
    # tasks for a 95% CI of half-width `gap`: paired (sd of the oracle-uniform differences as the scale of a paired
    # difference) and unpaired (two independent task lists, each with the uniform rewards' sd)
    gaps = (0.01, 0.03, 0.1, 0.3)
    summary["tasks_to_resolve_paired"] = {str(g): int(np.ceil((1.96 * pooled["gap_sd"] / g) ** 2)) for g in gaps}
    summary["tasks_to_resolve_unpaired"] = {
        str(g): int(np.ceil(2 * (1.96 * pooled["uniform_sd"] / g) ** 2)) for g in gaps
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
