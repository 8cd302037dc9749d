"""Multi-fidelity search: ASHA (Li et al., A System for Massively Parallel Hyperparameter Tuning, MLSys
2020) from Ray Tune, with an env's ``fidelity`` (MetaNAS: meta-training episodes per architecture) as
the resource.

Each candidate a searcher asks for is a Tune trial that scores it at increasing fidelities, the rungs
``min_fidelity * reduction_factor**k`` and finally the env's own fidelity; at each rung ASHA stops the
trial unless its reward is in the top ``1 / reduction_factor`` of the rewards seen there, so most
candidates are only scored cheaply and the full-fidelity budget goes to the promising ones. A rung
scores the candidate afresh (MetaNAS retrains the network for that many episodes), and every
report's ``cost_*`` is charged, so a run's simulated cost (``total_cost_train_episodes``) is honest
and comparable with a plain search's at equal cost.

Searchers: the asynchronous ones (``random``, ASHA's own pairing, and ``evolution``): a candidate's
reward, told when its trial ends, is its last (highest-fidelity) one. The answer is the best
candidate *at the env's fidelity*; lower-fidelity rewards are not comparable with it.

Outputs, as :func:`metabench.search.search`: ``trace.csv`` (one row per report, as it arrives: the
trial, fidelity, reward, best full-fidelity reward so far (NaN before the first), cumulative costs, candidate),
``best.json`` and ``checkpoint.pt``. Trials run on Ray Tune (one CPU each, ``workers`` at a time);
an interrupted ASHA search starts again (not resumed).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from metabench.search import (
    CandidateWorker,
    SearchResult,
    candidate_space,
    format_candidate,
    load_searcher,
    searcher_defaults,
    task_seeds,
    write_result,
)
from metabench.training import write_csv


def rungs(min_fidelity: int, max_fidelity: int, reduction_factor: int = 3) -> list[int]:
    """The fidelities a trial is scored at: ``min_fidelity * reduction_factor**k`` below ``max_fidelity``, then it."""
    if not 1 <= min_fidelity <= max_fidelity or reduction_factor < 2:
        raise ValueError(
            f"need 1 <= min_fidelity <= max_fidelity and reduction_factor >= 2, got {min_fidelity}, "
            f"{max_fidelity}, {reduction_factor}"
        )
    ladder = [min_fidelity]
    while ladder[-1] * reduction_factor < max_fidelity:
        ladder.append(ladder[-1] * reduction_factor)
    return ladder + [max_fidelity] if ladder[-1] != max_fidelity else ladder


def asha_search(
    method: str,
    env_id: str,
    *,
    evaluations: int,
    out_dir: str | Path,
    seed: int = 0,
    episodes: int = 1,
    min_fidelity: int | None = None,
    reduction_factor: int = 3,
    env_kwargs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    device: str = "cpu",
    workers: int = 2,
    address: str | None = None,
    command: str | None = None,
) -> SearchResult:
    """ASHA over ``evaluations`` candidates of searcher ``method`` (asynchronous searchers only).

    ``min_fidelity`` defaults to the env's fidelity divided by ``reduction_factor**2`` (three rungs).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import Searcher as TuneSearcher

    from metabench.cluster import connect

    env_kwargs = dict(env_kwargs or {})
    spec = gym.spec(env_id)
    if "fidelity" not in spec.kwargs:
        raise ValueError(f"{env_id} has no fidelity to schedule (ASHA needs an env with a fidelity argument)")
    if "split" in spec.kwargs:
        env_kwargs.setdefault("split", "val")
    if env_kwargs.get("split") == "test":
        raise ValueError("search never runs on the test split: it would select on the tasks it is reported on")
    max_fidelity = int(env_kwargs.pop("fidelity", spec.kwargs["fidelity"]))
    ladder = rungs(min_fidelity or max(1, max_fidelity // reduction_factor**2), max_fidelity, reduction_factor)
    env = gym.make(env_id, device=device, **env_kwargs, fidelity=ladder[0])
    searcher_class = load_searcher(method)
    searcher = searcher_class(candidate_space(env), seed, **(config or {}))
    if searcher.batch is not None:
        raise ValueError(f"ASHA runs asynchronous searchers (random, evolution); {method} is batch-synchronous")
    config = {**searcher_defaults(searcher_class), **(config or {})}
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    connect(address)

    def trial(spec_: dict[str, Any]) -> None:
        costs: dict[str, float] = defaultdict(float)
        candidate = np.asarray(spec_["candidate"], dtype=np.float64)
        for fidelity in ladder:
            worker = CandidateWorker.make(spec, {**env_kwargs, "fidelity": fidelity}, device)
            result = worker.score(candidate, task_seeds(seed, spec_["number"], episodes))
            for key, value in result["costs"].items():
                costs[key] += value
            tune.report({"reward": result["reward"], "fidelity": fidelity, "seconds": result["seconds"], **costs})

    class Suggest(TuneSearcher):
        """Our ask/tell searcher as Tune's: a trial per asked candidate, told its last reward when it ends."""

        def __init__(self) -> None:
            super().__init__(metric="reward", mode="max")
            self.asked: dict[str, np.ndarray] = {}
            self.count = 0

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.count == evaluations:
                return TuneSearcher.FINISHED
            self.count += 1
            self.asked[trial_id] = np.asarray(searcher.ask(), dtype=np.float64)
            return {"candidate": self.asked[trial_id].tolist(), "number": self.count}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: an interrupted ASHA search starts again."""

        def restore(self, checkpoint_path: str) -> None:
            """Nothing to restore (see :meth:`save`)."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            candidate = self.asked.pop(trial_id)
            if result is not None and not error and "reward" in result:
                searcher.tell(candidate, float(result["reward"]))

    trace: list[dict[str, Any]] = []
    totals: dict[str, float] = defaultdict(float)
    trial_costs: dict[str, dict[str, float]] = {}  # each trial's cumulative costs at its last report
    best = {"reward": -math.inf, "candidate": None}
    started = time.perf_counter()

    class Trace(tune.Callback):
        """Writes each report to ``trace.csv`` as it arrives (in this, the driver's, process)."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            candidate = np.asarray(trial.config["candidate"], dtype=np.float64)
            previous = trial_costs.get(trial.trial_id, {})
            for key, value in result.items():
                if key.startswith("cost_"):
                    totals[key] += value - previous.get(key, 0.0)
            trial_costs[trial.trial_id] = {key: value for key, value in result.items() if key.startswith("cost_")}
            if result["fidelity"] == max_fidelity and result["reward"] > best["reward"]:
                best.update(reward=result["reward"], candidate=candidate)
            trace.append(
                {
                    "evaluation": len(trace) + 1,
                    "trial": trial.config["number"],
                    "fidelity": result["fidelity"],
                    "reward": result["reward"],
                    "best_reward": best["reward"] if best["candidate"] is not None else math.nan,
                    "seconds": round(result["seconds"], 4),
                    "elapsed": round(time.perf_counter() - started, 3),
                    **{f"total_{key}": round(value, 4) for key, value in totals.items()},
                    "candidate": format_candidate(candidate),
                }
            )
            write_csv(trace, out / "trace.csv")

    scheduler = ASHAScheduler(
        time_attr="fidelity", max_t=max_fidelity, grace_period=ladder[0], reduction_factor=reduction_factor
    )
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="reward",
            mode="max",
            scheduler=scheduler,
            search_alg=Suggest(),
            num_samples=evaluations,
            max_concurrent_trials=workers,
        ),
        run_config=tune.RunConfig(storage_path=str(out), name="tune", callbacks=[Trace()], verbose=0),
    )
    tuner.fit()
    if best["candidate"] is None:
        raise RuntimeError("no candidate reached the full fidelity; raise evaluations or lower reduction_factor")
    settings = {
        "method": method,
        "scheduler": {"name": "asha", "rungs": ladder, "reduction_factor": reduction_factor},
        "env_id": env_id,
        "env_kwargs": {**env_kwargs, "fidelity": max_fidelity},
        "seed": seed,
        "episodes_per_evaluation": episodes,
        "fixed_tasks": False,
        "config": config,
    }
    return write_result(
        out,
        settings,
        trace,
        best["reward"],
        best["candidate"],
        None,
        totals,
        workers=workers,
        evaluations=evaluations,
        device=device,
        command=command,
    )
