"""MetaNAS fidelity study: does the env's reward at a fidelity rank architectures as their test accuracy does?

    python benchmarks/nas_fidelity.py run [--random 19] [--workers 2]     # train and score (resumable)
    python benchmarks/nas_fidelity.py report                              # Kendall tau table and plot

``run``: for Conv-4, the best architecture of each method of the earlier searches (``results/nas/search``) and
``--random`` architectures drawn uniformly (``numpy.random.default_rng(0)``), one ProtoNets run each with
``MetaNAS-Omniglot-5w1s-v1``'s recipe (:meth:`MetaNASEnv.train`, train seed 0) to the test protocol's
``TEST_TRAIN_EPISODES``; on its way the run is scored on the env's val episodes at every fidelity of
``FIDELITIES`` (exactly the env's reward at that fidelity), and at the end on the 1,000 test episodes of
``MetaOmniglot-5w1s-v1`` (the MetaNAS test protocol). One JSON line per architecture is appended to
``results/nas/fidelity/records.jsonl`` as it arrives; a rerun skips the architectures already there.

``report``: Kendall's tau between the reward at each fidelity and the test accuracy, with a 95% percentile
bootstrap CI over architectures (10,000 resamples), and the training episodes and seconds each fidelity
costs; writes ``results/nas/fidelity/{tau.md,tau.json,fidelity.png}``.
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
from scipy.stats import kendalltau

import metabench  # noqa: F401
from metabench import allocator, nas
from metabench.envs.nas import TEST_TRAIN_EPISODES
from metabench.evaluation import evaluate

ENV_ID = "MetaNAS-Omniglot-5w1s-v1"
TEST_ENV_ID = "MetaOmniglot-5w1s-v1"
FIDELITIES = (10, 30, 100, 300, TEST_TRAIN_EPISODES)
RESULTS = Path(__file__).parent / "results" / "nas" / "fidelity"
RECORDS = RESULTS / "records.jsonl"
BOOTSTRAP = 10_000


class FidelityWorker:
    """Trains one architecture by the env's recipe and scores it at every fidelity, then on test."""

    def __init__(self) -> None:
        self.env = gym.make(ENV_ID, mode="oneshot").unwrapped

    def run(self, name: str, decisions: list[int]) -> dict:
        architecture = nas.decode(decisions)
        rows, trained, clock = [], 0.0, time.perf_counter()
        for episodes, learner, _ in self.env.train(architecture, FIDELITIES):
            trained += time.perf_counter() - clock  # training time only: the val scoring is not counted
            rows.append({"fidelity": episodes, "train_seconds": round(trained, 2), **self.env.score_val(learner)})
            clock = time.perf_counter()
        summary, _ = evaluate(learner, TEST_ENV_ID, progress=False)
        return {
            "name": name,
            "architecture": nas.to_string(architecture),
            "decisions": decisions,
            "params": nas.count_params(architecture),
            "mflops": round(nas.flops(architecture) / 1e6, 2),
            "fidelities": rows,
            "test_accuracy": summary["results"]["accuracy_mean"],
            "test_accuracy_ci95": summary["results"]["accuracy_ci95"],
            "test_reward": summary["results"]["reward_mean"],
            "test_episodes_sha256": summary["protocol"]["episodes_sha256"],
            "machine": machine("cpu"),
        }


def architectures(random: int) -> dict[str, list[int]]:
    """Conv-4, each search method's best architecture (``results/nas/search``), then ``random`` seeded draws
    (``uniform-0``, ``uniform-1``, ...; a draw already chosen is skipped)."""
    chosen = {"conv4": [int(v) for v in nas.encode(nas.CONV4)]}
    for method in ("random", "evolution", "reinforce"):  # each method's best run (by its search reward)
        runs = [json.loads(path.read_text()) for path in (RESULTS.parent / "search" / method).glob("*/best.json")]
        best = max(runs, key=lambda run: run["best_reward"])
        chosen[f"{method}-winner-seed{best['seed']}"] = [int(v) for v in best["best_candidate"]]
    rng, drawn = np.random.default_rng(0), 0
    while drawn < random:
        decisions = [int(v) for v in rng.integers(nas.CHOICES, size=nas.N_DECISIONS)]
        if decisions not in chosen.values():
            chosen[f"uniform-{drawn}"] = decisions
            drawn += 1
    return chosen


def run(args: argparse.Namespace) -> None:
    from metabench.cluster import Pool

    allocator.keep_freed_memory()
    RESULTS.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["name"] for line in RECORDS.read_text().splitlines()} if RECORDS.exists() else set()
    todo = {name: d for name, d in architectures(args.random).items() if name not in done}
    # costliest first, so that the last call to finish is a short one
    calls = sorted(todo.items(), key=lambda item: -nas.flops(nas.decode(item[1])))
    print(f"{len(done)} architectures done, {len(calls)} to train", flush=True)
    if args.workers > 1:  # the worker class lives in this script: send it to the Ray workers by value
        import ray

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def save(record: dict) -> None:
        with RECORDS.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        rewards = " ".join(f"{row['reward']:.3f}" for row in record["fidelities"])
        print(f"{record['name']}: rewards {rewards}, test {record['test_accuracy']:.4f}", flush=True)

    with Pool(FidelityWorker, workers=args.workers) as pool:
        pool.map("run", calls, progress=save)


def bootstrap_tau(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Kendall's tau-b of (x, y) and its 95% percentile bootstrap CI over the pairs."""
    taus = []
    for _ in range(BOOTSTRAP):
        index = rng.integers(len(x), size=len(x))
        if len(set(x[index])) > 1 and len(set(y[index])) > 1:
            taus.append(kendalltau(x[index], y[index]).statistic)
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(kendalltau(x, y).statistic), float(low), float(high)


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    test = np.array([record["test_accuracy"] for record in records])
    rng = np.random.default_rng(0)
    rows = []
    for index, fidelity in enumerate(FIDELITIES):
        reward = np.array([record["fidelities"][index]["reward"] for record in records])
        seconds = np.array([record["fidelities"][index]["train_seconds"] for record in records])
        tau, low, high = bootstrap_tau(reward, test, rng)
        rows.append(
            {
                "fidelity": fidelity,
                "tau": round(tau, 3),
                "tau_ci95": [round(low, 3), round(high, 3)],
                "train_seconds_median": round(float(np.median(seconds)), 1),
                "train_seconds_conv4": next(
                    r["fidelities"][index]["train_seconds"] for r in records if r["name"] == "conv4"
                ),
            }
        )
    winner = {
        row["fidelity"]: records[int(np.argmax([r["fidelities"][i]["reward"] for r in records]))]["name"]
        for i, row in enumerate(rows)
    }
    result = {
        "command": "python benchmarks/nas_fidelity.py run --random 19 --workers 2; "
        "python benchmarks/nas_fidelity.py report",
        "env_id": ENV_ID,
        "test_protocol": f"ProtoNets, {TEST_TRAIN_EPISODES} episodes of the env's recipe, {TEST_ENV_ID} test episodes",
        "architectures": len(records),
        "bootstrap_resamples": BOOTSTRAP,
        "fidelities": rows,
        "best_by_reward": winner,
        "best_by_test": records[int(np.argmax(test))]["name"],
        "machine": records[0]["machine"],
    }
    (RESULTS / "tau.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Kendall's tau between `{ENV_ID}`'s reward at a fidelity (train seed 0) and the test accuracy after "
        f"{TEST_TRAIN_EPISODES} episodes, over {len(records)} architectures; 95% bootstrap CI "
        f"({BOOTSTRAP:,} resamples of the architectures). Seconds: training only, one thread per worker.",
        "",
        "| fidelity (episodes) | Kendall tau | 95% CI | Conv-4 train seconds | median train seconds | best by reward |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['fidelity']} | {row['tau']:.3f} | [{row['tau_ci95'][0]:.3f}, {row['tau_ci95'][1]:.3f}] | "
            f"{row['train_seconds_conv4']:.0f} | {row['train_seconds_median']:.0f} | {winner[row['fidelity']]} |"
        )
    lines += [
        "",
        "| architecture | name | MFLOPs | " + " | ".join(f"reward@{f}" for f in FIDELITIES) + " | test accuracy |",
    ]
    lines.append("| --- " * (4 + len(FIDELITIES)) + "|")
    for record in sorted(records, key=lambda r: -r["test_accuracy"]):
        rewards = " | ".join(f"{row['reward']:.3f}" for row in record["fidelities"])
        lines.append(
            f"| `{record['architecture']}` | {record['name']} | {record['mflops']} | {rewards} | "
            f"{100 * record['test_accuracy']:.2f} ± {100 * record['test_accuracy_ci95']:.2f} % |"
        )
    (RESULTS / "tau.md").write_text("\n".join(lines) + "\n")

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    taus = np.array([row["tau"] for row in rows])
    errors = np.array([[row["tau"] - row["tau_ci95"][0], row["tau_ci95"][1] - row["tau"]] for row in rows]).T
    left.errorbar(FIDELITIES, taus, yerr=errors, marker="o", capsize=4)
    left.set_xscale("log")
    left.set_xlabel("fidelity (training episodes per candidate)")
    left.set_ylabel("Kendall tau with test accuracy (95% CI)")
    left.set_title("How well the reward ranks architectures")
    for index, fidelity in enumerate(FIDELITIES[:-1]):
        if fidelity in (10, 100):
            reward = [record["fidelities"][index]["reward"] for record in records]
            right.scatter(reward, 100 * test, label=f"fidelity {fidelity}", s=18)
    right.set_xlabel("env reward (minus val query loss)")
    right.set_ylabel(f"test accuracy after {TEST_TRAIN_EPISODES} episodes (%)")
    right.set_title(f"{len(records)} architectures")
    right.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "fidelity.png", dpi=120)
    print((RESULTS / "tau.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--random", type=int, default=19)
    run_parser.add_argument("--workers", type=int, default=2)
    run_parser.set_defaults(func=run)
    commands.add_parser("report").set_defaults(func=report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
